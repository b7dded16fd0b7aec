"""Option resolution and chains of facecraft.gateway.processors_service (no Triton needed)."""

from __future__ import annotations

import pytest

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.processors_service import parse_chain, resolve_chain_options, resolve_options


def test_portrait_keeps_only_given_options_so_settings_defaults_apply():
    assert resolve_options("portrait", {"width": "200", "background": "#0a0b0c"}) == {
        "width": 200,
        "background": (10, 11, 12),
        "format": "png",
    }


def test_other_processors_get_every_registry_default():
    resolved = resolve_options("face_enhancer", {"blend": "0.5"})
    assert resolved == {
        "fidelity": 0.7,
        "max_faces": 16,
        "min_face_size": 0,
        "blend": 0.5,
        "background_enhance": False,
        "format": "png",
    }


@pytest.mark.parametrize(
    ("name", "values", "status", "message"),
    [
        ("nope", {}, 404, "valid: portrait, face_enhancer"),
        ("face_analyser", {"format": "png"}, 400, "face_analyser has no option 'format'"),
        ("background_remover", {"mask_only": "perhaps"}, 400, "mask_only must be true or false"),
        # a rule across options (the registry's check): refused here, before a job is queued
        ("background_remover", {"format": "jpeg"}, 400, "format=jpeg has no alpha"),
    ],
)
def test_bad_names_and_options(name, values, status, message):
    with pytest.raises(GatewayError, match=message) as caught:
        resolve_options(name, values)
    assert caught.value.status_code == status


def test_chain_options_force_png_between_steps():
    chain = parse_chain("face_enhancer,background_remover")
    options = resolve_chain_options(
        chain, '{"face_enhancer": {"format": "jpeg"}, "background_remover": {"format": "png"}}'
    )
    assert options["face_enhancer"]["format"] == "png" and options["background_remover"]["format"] == "png"
    with pytest.raises(GatewayError, match="not in the chain"):
        resolve_chain_options(chain, '{"face_analyser": {}}')
    with pytest.raises(GatewayError, match="format=jpeg has no alpha") as caught:
        resolve_chain_options(chain, '{"background_remover": {"format": "jpeg"}}')
    assert caught.value.status_code == 400
    jpeg = resolve_chain_options(chain, '{"background_remover": {"format": "jpeg", "mask_only": true}}')
    assert jpeg["background_remover"]["format"] == "jpeg"


def test_an_operator_disabled_processor_is_absent_and_answers_403(tmp_path):
    from tests.gateway.test_app import make_client, small_jpeg

    with make_client(tmp_path, disabled_processors="frame_enhancer, face_enhancer, face_swapper") as client:
        listed = [p["name"] for p in client.get("/api/v1/processors").json()["processors"]]
        assert "frame_enhancer" not in listed and "face_enhancer" not in listed and "portrait" in listed
        assert "face_swapper" not in listed
        files = {"file": ("p.jpg", small_jpeg(), "image/jpeg")}
        refused = client.post("/api/v1/processors/frame_enhancer", files=files)
        assert refused.status_code == 403 and refused.json()["error"] == "processor_disabled"
        assert "FACECRAFT_DISABLED_PROCESSORS" in refused.json()["error_message"]
        job = client.post(
            "/api/v1/jobs", files=files, data={"processors": "background_remover,face_enhancer"}
        )
        assert job.status_code == 403 and "'face_enhancer'" in job.json()["error_message"]
        swap = client.post(
            "/api/v1/processors/face_swapper", files={"source": files["file"], "target": files["file"]}
        )
        assert swap.status_code == 403 and swap.json()["error"] == "processor_disabled"
        enabled = client.post("/api/v1/processors/background_remover", files=files)
        assert enabled.status_code != 403  # Triton is down here: 503, never processor_disabled


def test_get_on_a_processor_describes_it_404_for_an_unknown_one_403_when_disabled(tmp_path):
    from facecraft import processors as registry
    from tests.gateway.test_app import make_client

    with make_client(tmp_path, disabled_processors="face_swapper") as client:
        described = client.get("/api/v1/processors/face_enhancer")
        assert described.status_code == 200 and described.json() == registry.get("face_enhancer").as_dict()
        unknown = client.get("/api/v1/processors/face_enhancerz")
        assert unknown.status_code == 404 and "face_enhancer" in unknown.json()["error_message"]
        disabled = client.get("/api/v1/processors/face_swapper")
        assert disabled.status_code == 403 and disabled.json()["error"] == "processor_disabled"


def test_disabled_processors_setting_names_an_unknown_processor():
    from facecraft.gateway.settings import GatewaySettings

    with pytest.raises(ValueError, match="unknown processor.*face_swapperz"):
        GatewaySettings(disabled_processors="face_swapperz")
    assert GatewaySettings(disabled_processors="").disabled_processors == ()
