"""The Triton-free parts of the adapter (the rest runs inside Triton in tests/model_repository)."""

import types

import numpy as np
import pytest

from facecraft.pipeline.errors import PipelineError
from facecraft.pipeline.triton_adapter import (
    bytes_tensor,
    error_message,
    execute_each,
    first_bytes,
    requested_only,
    unbatch,
)


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


def test_requested_only_keeps_exactly_the_requested_outputs():
    outputs = {"RGB": np.zeros(3), "FACE_BOXES": np.zeros(4), "FACE_COUNT": np.ones(1)}
    assert list(requested_only(outputs, ["FACE_COUNT", "RGB"])) == ["RGB", "FACE_COUNT"]
    assert list(requested_only(outputs, {"NOT_AN_OUTPUT"})) == []
    assert list(requested_only(outputs, [])) == list(outputs), "none requested: all of them"


class _StandInRequest:
    """What execute_each uses of a pb_utils.InferenceRequest: inputs and requested output names."""

    def __init__(self, inputs, requested):
        self.inputs, self.requested = inputs, requested

    def requested_output_names(self):
        return self.requested


def _stand_in_pb_utils():
    """The three names of ``triton_python_backend_utils`` that execute_each calls (the real module
    exists only inside the Triton stub)."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = lambda name, array: (name, array)
    module.InferenceResponse = lambda output_tensors=None, error=None: {"tensors": output_tensors}
    module.get_input_tensor_by_name = lambda request, name: (
        types.SimpleNamespace(as_numpy=lambda: request.inputs[name]) if name in request.inputs else None
    )
    return module


def test_execute_each_returns_only_the_outputs_each_request_asked_for(monkeypatch):
    """An ensemble step asked for a subset (``faces`` in face_enhancer: no FACE_BOXES/FACE_SCORES)
    gets exactly that subset back, so the Python stub never prunes tensors itself."""
    monkeypatch.setitem(__import__("sys").modules, "triton_python_backend_utils", _stand_in_pb_utils())

    def handler(inputs):
        value = inputs["X"]
        return {"A": value, "B": value * 2, "C": value * 3}

    requests = [
        _StandInRequest({"X": np.array([[1]])}, ["A", "C"]),
        _StandInRequest({"X": np.array([[2]])}, ["B"]),
        _StandInRequest({"X": np.array([[3]])}, []),
    ]
    responses = execute_each(requests, "step", ("X",), handler)
    names = [[name for name, _ in response["tensors"]] for response in responses]
    assert names == [["A", "C"], ["B"], ["A", "B", "C"]]
    assert [int(array[0][0]) for _, array in responses[1]["tensors"]] == [4]
