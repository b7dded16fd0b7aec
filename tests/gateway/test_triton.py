"""The Triton wrapper's pure parts: input tensors, output parsing, error mapping."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from facecraft.gateway.triton import (
    ENSEMBLE_BASIC,
    ENSEMBLE_ENHANCED,
    PortraitRequest,
    build_inputs,
    map_triton_error,
    parse_outputs,
)

REQUEST = PortraitRequest(
    width=300,
    height=400,
    background=(1, 2, 3),
    face_margin=0.5,
    oval_mask=False,
    enhance=True,
    fidelity=0.25,
    max_jpeg_kb=64,
    touch_up=True,
)


def _by_name(inputs):
    return {tensor.name(): tensor for tensor in inputs}


def test_enhanced_request_inputs_follow_the_contract():
    tensors = _by_name(build_inputs(b"\xff\xd8\xffdata", REQUEST))
    assert REQUEST.model_name == ENSEMBLE_ENHANCED
    expected = {
        "IMAGE": ("BYTES", [1, 1]),
        "WIDTH": ("INT32", [1, 1]),
        "HEIGHT": ("INT32", [1, 1]),
        "BACKGROUND": ("UINT8", [1, 3]),
        "FACE_MARGIN": ("FP32", [1, 1]),
        "OVAL_MASK": ("BOOL", [1, 1]),
        "FIDELITY": ("FP32", [1, 1]),
        "MAX_JPEG_KB": ("INT32", [1, 1]),
        "TOUCH_UP": ("BOOL", [1, 1]),
    }
    assert {name: (t.datatype(), t.shape()) for name, t in tensors.items()} == expected


def test_basic_request_has_no_fidelity_and_uses_portrait_basic():
    basic = PortraitRequest(**{**REQUEST.__dict__, "enhance": False})
    assert basic.model_name == ENSEMBLE_BASIC
    assert "FIDELITY" not in _by_name(build_inputs(b"x", basic))


class _FakeResult:
    """Stands in for tritonclient's InferResult (only ``as_numpy``) in this pure parsing test."""

    def __init__(self, arrays):
        self.arrays = arrays

    def as_numpy(self, name):
        return self.arrays[name]


def test_parse_outputs():
    result = _FakeResult(
        {
            "PNG": np.array([[b"png"]], dtype=np.object_),
            "JPEG": np.array([[b"jpeg"]], dtype=np.object_),
            "FACE_BOX": np.array([[10, 20, 30, 40]], dtype=np.int32),
            "FACE_COUNT": np.array([[2]], dtype=np.int32),
            "JPEG_CAP_MET": np.array([[False]]),
            "OUTPUT_SIZE": np.array([[300, 400]], dtype=np.int32),
        }
    )
    output = parse_outputs(result)
    assert (output.png, output.jpeg) == (b"png", b"jpeg")
    assert output.face_box == (10, 20, 30, 40)
    assert output.face_count == 2
    assert output.jpeg_cap_met is False
    assert output.output_size == (300, 400)


@pytest.mark.parametrize(
    "message, status, code",
    [
        (
            "no_face_detected: detect: no face found in a 320x240 image",
            "StatusCode.INVALID_ARGUMENT",
            "no_face_detected",
        ),
        (
            "in ensemble 'portrait', invalid_image: decode: not an image",
            "StatusCode.INVALID_ARGUMENT",
            "invalid_image",
        ),
        ("image_too_large: decode: 60000000 pixels", "StatusCode.INVALID_ARGUMENT", "image_too_large"),
        ("invalid_option: decode: WIDTH must be 64..4096", "StatusCode.INVALID_ARGUMENT", "invalid_option"),
    ],
)
def test_pipeline_errors_map_to_their_code(message, status, code):
    error = map_triton_error(InferenceServerException(message, status), retry_after_s=3)
    assert (error.status_code, error.error) == (400, code)
    assert error.message.split(": ")[0] in ("detect", "decode")


def test_internal_and_transport_errors():
    internal = map_triton_error(
        InferenceServerException("internal_error: compose: boom", "StatusCode.INTERNAL"), 3
    )
    assert (internal.status_code, internal.error) == (500, "internal_error")
    down = map_triton_error(
        InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), 7
    )
    assert (down.status_code, down.error, down.headers["Retry-After"]) == (503, "triton_unavailable", "7")
    slow = map_triton_error(InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), 3)
    assert (slow.status_code, slow.error) == (504, "triton_timeout")
    not_ready = map_triton_error(
        InferenceServerException(
            "Request for unknown model: 'portrait' is not ready", "StatusCode.UNAVAILABLE"
        ),
        3,
    )
    assert not_ready.error == "triton_unavailable"
    other = map_triton_error(InferenceServerException("something odd", "StatusCode.INTERNAL"), 3)
    assert (other.status_code, other.error) == (500, "internal_error")
