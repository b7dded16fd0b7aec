"""Gateway REST mapping: form fields for options (omitted → not sent) and error bodies → typed errors."""

from __future__ import annotations

from facecraft.client.errors import FacecraftError, InvalidImage, NoFaceDetected, ServerUnavailable
from facecraft.client.gateway_client import error_from_gateway, gateway_form_fields
from facecraft.client.options import PortraitOptions


def test_defaults_send_only_enhance_and_base64():
    assert gateway_form_fields(PortraitOptions()) == {"enhance_face": "true", "return_base64": "true"}


def test_options_map_to_the_rest_contract_fields():
    form = gateway_form_fields(
        PortraitOptions(
            enhance=True,
            width=300,
            height=400,
            background=(1, 2, 3),
            face_margin=0.5,
            oval_mask=False,
            fidelity=0.2,
        )
    )
    assert form == {
        "enhance_face": "true",
        "return_base64": "true",
        "width": "300",
        "height": "400",
        "background_r": "1",
        "background_g": "2",
        "background_b": "3",
        "face_margin": "0.5",
        "use_oval_mask": "false",
        "enhance_fidelity": "0.2",
    }
    assert gateway_form_fields(PortraitOptions(enhance=False))["enhance_face"] == "false"


def test_gateway_errors_are_typed():
    assert (
        type(
            error_from_gateway(400, {"success": False, "error": "no_face_detected", "error_message": "none"})
        )
        is NoFaceDetected
    )
    assert (
        type(error_from_gateway(415, {"detail": {"error": "invalid_image", "error_message": "bad"}}))
        is InvalidImage
    )
    assert type(error_from_gateway(503, {"detail": "Triton unavailable"})) is ServerUnavailable
    assert type(error_from_gateway(500, "oops")) is FacecraftError
