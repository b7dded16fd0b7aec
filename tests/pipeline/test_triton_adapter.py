"""The Triton-free parts of the adapter (the rest runs inside Triton in tests/model_repository)."""

import numpy as np
import pytest

from facecraft.pipeline.errors import PipelineError
from facecraft.pipeline.triton_adapter import bytes_tensor, error_message, first_bytes, unbatch


def test_pipeline_errors_are_client_errors():
    message, client = error_message(PipelineError("invalid_image", "decode", "empty"), "decode")
    assert (message, client) == ("invalid_image: decode: empty", True)


def test_unexpected_errors_are_internal_and_name_the_step():
    message, client = error_message(KeyError("x"), "compose")
    assert not client
    assert message.startswith("internal_error: compose: KeyError")


def test_bytes_round_trip():
    tensor = bytes_tensor(b"\x00\xffabc")
    assert tensor.dtype == np.object_ and first_bytes(tensor) == b"\x00\xffabc"


def test_unbatch():
    assert unbatch(None) is None
    assert unbatch(np.zeros((1, 3))).shape == (3,)
    with pytest.raises(PipelineError):
        unbatch(np.zeros((2, 3)))
