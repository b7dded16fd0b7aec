"""Option validation and encoding: which tensors are sent, with which dtype/shape; omitted → not sent."""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.client.errors import InvalidOption
from facecraft.client.options import BASIC_MODEL, ENHANCED_MODEL, PortraitOptions, encode_inputs
from facecraft.client.transport import build_inputs, normalise_url


def by_name(specs):
    return {spec.name: spec for spec in specs}


def test_only_image_is_sent_when_no_option_is_given():
    specs = encode_inputs(b"\xff\xd8jpeg", PortraitOptions())
    assert [s.name for s in specs] == ["IMAGE"]
    image = specs[0]
    assert image.datatype == "BYTES"
    assert image.value.shape == (1, 1)
    assert image.value[0, 0] == b"\xff\xd8jpeg"


def test_every_option_is_encoded_with_the_contract_dtype_and_shape():
    options = PortraitOptions(
        width=600,
        height=800,
        background=(1, 2, 3),
        face_margin=0.5,
        oval_mask=False,
        fidelity=0.25,
        max_jpeg_kb=64,
        touch_up=True,
    )
    specs = by_name(encode_inputs(b"x", options))
    expected = {
        "WIDTH": ("INT32", np.int32, (1, 1), 600),
        "HEIGHT": ("INT32", np.int32, (1, 1), 800),
        "FACE_MARGIN": ("FP32", np.float32, (1, 1), 0.5),
        "OVAL_MASK": ("BOOL", np.bool_, (1, 1), False),
        "FIDELITY": ("FP32", np.float32, (1, 1), 0.25),
        "MAX_JPEG_KB": ("INT32", np.int32, (1, 1), 64),
        "TOUCH_UP": ("BOOL", np.bool_, (1, 1), True),
    }
    for name, (datatype, dtype, shape, value) in expected.items():
        spec = specs[name]
        assert spec.datatype == datatype, name
        assert spec.value.dtype == dtype, name
        assert spec.value.shape == shape, name
        assert spec.value[0, 0] == value, name
    background = specs["BACKGROUND"]
    assert background.datatype == "UINT8"
    assert background.value.shape == (1, 3)
    assert background.value.tolist() == [[1, 2, 3]]
    assert set(specs) == {"IMAGE", *expected, "BACKGROUND"}


def test_partial_options_send_only_what_was_set():
    specs = by_name(encode_inputs(b"x", PortraitOptions(width=300, oval_mask=True)))
    assert set(specs) == {"IMAGE", "WIDTH", "OVAL_MASK"}


def test_enhance_selects_the_ensemble():
    assert PortraitOptions().model_name == ENHANCED_MODEL
    assert PortraitOptions(enhance=False).model_name == BASIC_MODEL


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 10},
        {"height": 5000},
        {"width": 100.5},
        {"width": True},
        {"face_margin": -0.1},
        {"face_margin": 3},
        {"fidelity": 1.5},
        {"max_jpeg_kb": 4},
        {"background": (1, 2)},
        {"background": (0, 0, 256)},
        {"oval_mask": "yes"},
        {"enhance": False, "fidelity": 0.5},
    ],
)
def test_out_of_range_options_raise_invalid_option(kwargs):
    with pytest.raises(InvalidOption) as raised:
        PortraitOptions(**kwargs)
    assert raised.value.code == "invalid_option"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_build_inputs_produces_tritonclient_inputs(protocol):
    inputs = build_inputs(protocol, encode_inputs(b"abc", PortraitOptions(width=256, background=(9, 9, 9))))
    assert [i.name() for i in inputs] == ["IMAGE", "WIDTH", "BACKGROUND"]
    assert [i.datatype() for i in inputs] == ["BYTES", "INT32", "UINT8"]
    assert inputs[2].shape() == [1, 3]


def test_build_inputs_can_leave_image_for_shared_memory():
    inputs = build_inputs("grpc", encode_inputs(b"abc", PortraitOptions()), skip=("IMAGE",))
    inputs[0].set_shared_memory("region", 7)
    assert inputs[0].name() == "IMAGE"


def test_normalise_url_drops_scheme_and_rejects_unknown_protocol():
    assert normalise_url("http://127.0.0.1:8000/", "http") == "127.0.0.1:8000"
    assert normalise_url("127.0.0.1:8001", "grpc") == "127.0.0.1:8001"
    with pytest.raises(ValueError):
        normalise_url("127.0.0.1:8001", "tcp")


def test_preset_and_layout_are_sent_as_bytes_and_checked():
    specs = {s.name: s for s in encode_inputs(b"img", PortraitOptions(preset="uk_passport", layout="10x15"))}
    assert specs["PRESET"].datatype == "BYTES" and specs["PRESET"].value.tolist() == [[b"uk_passport"]]
    assert specs["LAYOUT"].value.tolist() == [[b"10x15"]]
    assert "PRESET" not in {s.name for s in encode_inputs(b"img", PortraitOptions())}
    with pytest.raises(InvalidOption, match="preset must be one of"):
        PortraitOptions(preset="mars")
    with pytest.raises(InvalidOption, match="layout needs a preset"):
        PortraitOptions(layout="a4")
