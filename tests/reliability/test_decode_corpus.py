"""The bad-input corpus through the pure decode step: the documented code for every case.

The same corpus goes through Triton (test_triton_bad_input.py) and the gateway
(test_gateway_bad_input.py); this tier pins the pipeline's own answer without any server.
"""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.pipeline import decode
from facecraft.pipeline.errors import PipelineError
from tests.reliability import corpus

# Known pipeline defects, pinned as strict xfails until fixed (name -> pytest.mark.xfail(...)).
# Empty now: the Pillow-bomb case (declared size above Pillow's 179 MP limit answered
# invalid_image instead of image_too_large), found by this corpus, is fixed in decode.py.
DECODE_DEFECTS: dict[str, pytest.MarkDecorator] = {}
CASE_NAMES = [case.name for case in corpus.build_input_cases(np.zeros((64, 64, 3), np.uint8))]


@pytest.fixture(scope="module")
def cases(astronaut_rgb) -> dict[str, corpus.InputCase]:
    return {case.name: case for case in corpus.build_input_cases(astronaut_rgb)}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=DECODE_DEFECTS.get(name, ())) for name in CASE_NAMES]
)
def test_decode_answers_the_documented_code(name, cases, astronaut_rgb):
    case = cases[name]
    # no_face_detected is decided by the detect step: decode itself must succeed.
    expected = case.triton_error if case.triton_error != corpus.NO_FACE_DETECTED else None
    if expected is None:
        result = decode.decode_image(case.data)
        assert result.rgb.dtype == np.uint8 and result.rgb.shape[2] == 3
        if name not in ("one_by_one_png",):
            # Every accepted variant of the face photo decodes to the upright photo.
            assert result.rgb.shape[:2] == astronaut_rgb.shape[:2]
            difference = np.abs(result.rgb.astype(np.int16) - astronaut_rgb).mean()
            limit = 60 if name in ("grayscale_jpeg", "rgba_png") else 8
            assert difference < limit, f"{name}: decoded image differs from the source ({difference:.1f})"
        return
    with pytest.raises(PipelineError) as raised:
        decode.decode_image(case.data)
    assert raised.value.code == expected, str(raised.value)
    assert raised.value.step == "decode"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_submit_time_check_answers_as_the_decode_step(name, cases):
    """``verify_image`` (what ``POST /api/v1/jobs`` runs before queueing) refuses exactly what the
    decode step refuses, with the same code, and accepts every photo it decodes — a JPEG read at
    1/8 scale included: a false refusal would turn away a good photo, a miss queue a job that can
    only fail."""
    case = cases[name]
    try:
        decode.decode_image(case.data)
    except PipelineError as error:
        with pytest.raises(PipelineError) as raised:
            decode.verify_image(case.data)
        assert (raised.value.code, raised.value.step) == (error.code, "decode"), str(raised.value)
    else:
        assert decode.verify_image(case.data) == decode.sniff_format(case.data)
