import pytest

from facecraft.pipeline.errors import PipelineError


def test_message_format_is_code_step_detail():
    error = PipelineError("no_face_detected", "detect", "no face found in a 10x10 image")
    assert str(error) == "no_face_detected: detect: no face found in a 10x10 image"
    assert (error.code, error.step) == ("no_face_detected", "detect")


def test_unknown_code_is_rejected():
    with pytest.raises(ValueError, match="unknown pipeline error code"):
        PipelineError("oops", "decode", "x")
