"""The Python-based onnxruntime backend's request handling, without a server.

``triton_python_backend_utils`` only exists inside a Triton stub, so these unit tests load
``model.py`` against a minimal stand-in for that module (plain containers, no behaviour); the same
backend is exercised through the real Triton in ``test_server.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from facecraft.runtime.backends import onnxruntime_backend_source
from tests.runtime.small_models import write_add_one_onnx


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Request:
    def __init__(self, **arrays):
        self.tensors = {name: _Tensor(name, array) for name, array in arrays.items()}


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors or [], error

    def output(self, name):
        return next(t.as_numpy() for t in self.output_tensors if t.name() == name)


class _TritonError:
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class _Logger:
    lines: list[str] = []

    @classmethod
    def log_info(cls, message):
        cls.lines.append(message)

    log_warn = log_info


def _fake_pb_utils():
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = _TritonError
    module.TritonModelException = RuntimeError
    module.Logger = _Logger
    module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    module.triton_string_to_numpy = lambda dtype: {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32}[dtype]
    return module


@pytest.fixture
def make_backend_model(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location(
        "facecraft_ort_backend_under_test", onnxruntime_backend_source()
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_add_one_onnx(tmp_path / "add_one" / "1" / "model.onnx")
    config = {
        "name": "add_one",
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
    }

    def make(kind: str = "CPU", parameters: dict[str, str] | None = None):
        model = module.TritonPythonModel()
        _Logger.lines = []
        model_config = dict(config)
        model_config["parameters"] = {
            **config["parameters"],
            **{key: {"string_value": value} for key, value in (parameters or {}).items()},
        }
        model.initialize(
            {
                "model_config": json.dumps(model_config),
                "model_name": "add_one",
                "model_repository": str(tmp_path / "add_one"),
                "model_version": "1",
                "model_instance_kind": kind,
                "model_instance_device_id": "0",
            }
        )
        return model

    return make


@pytest.fixture
def backend_model(make_backend_model):
    return make_backend_model("CPU")


def test_batch_is_run_once_and_split_back(backend_model, monkeypatch):
    runs = []
    real_run = backend_model.session.run
    monkeypatch.setattr(
        backend_model.session,
        "run",
        lambda names, feeds, *options: runs.append(feeds) or real_run(names, feeds, *options),
    )
    requests = [_Request(x=np.full((n, 4), n, np.float32)) for n in (1, 3, 2)]
    responses = backend_model.execute(requests)
    assert len(runs) == 1 and runs[0]["x"].shape == (6, 4)
    for n, response in zip((1, 3, 2), responses, strict=True):
        assert response.error is None
        np.testing.assert_array_equal(response.output("y"), np.full((n, 4), n + 1, np.float32))


def test_bad_request_gets_its_own_error(backend_model):
    good = _Request(x=np.zeros((1, 4), np.float32))
    wrong_shape = _Request(x=np.zeros((1, 5), np.float32))
    wrong_dtype = _Request(x=np.zeros((1, 4), np.int32))
    missing = _Request()
    responses = backend_model.execute([good, wrong_shape, wrong_dtype, missing])
    np.testing.assert_array_equal(responses[0].output("y"), np.ones((1, 4), np.float32))
    assert "input 'x' has shape [1, 5], expected dims [4]" in responses[1].error.message
    assert "dtype int32, expected float32" in responses[2].error.message
    assert "missing input 'x'" in responses[3].error.message
    assert {r.error.code for r in responses[1:]} == {"INVALID_ARG"}


def test_failed_batch_is_retried_per_request(backend_model, monkeypatch):
    real_run = backend_model.session.run

    def fail_on_poison(names, feeds, *options):
        if np.isnan(feeds["x"]).any():
            raise RuntimeError("poisoned input")
        return real_run(names, feeds, *options)

    monkeypatch.setattr(backend_model.session, "run", fail_on_poison)
    poisoned = np.full((1, 4), np.nan, np.float32)
    responses = backend_model.execute([_Request(x=np.zeros((1, 4), np.float32)), _Request(x=poisoned)])
    np.testing.assert_array_equal(responses[0].output("y"), np.ones((1, 4), np.float32))
    assert "inference failed: poisoned input" in responses[1].error.message


def test_initialize_logs_provider_and_threads(backend_model):
    assert backend_model.provider == "CPUExecutionProvider"
    assert any(
        "on CPUExecutionProvider (instance kind CPU, intra-op threads 1" in line for line in _Logger.lines
    )


def test_gpu_kind_without_cuda_provider_falls_back_to_cpu_with_warning(make_backend_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fallback to observe")
    model = make_backend_model("GPU")
    assert model.provider == "CPUExecutionProvider"
    assert any(
        "instance kind GPU but onnxruntime has no CUDAExecutionProvider" in line for line in _Logger.lines
    )


def test_memory_parameters_use_the_native_backend_keys(make_backend_model):
    model = make_backend_model(
        "CPU",
        {"memory.enable_memory_arena_shrinkage": "cpu:0", "enable_mem_pattern": "0", "enable_mem_arena": "1"},
    )
    assert model.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert any("arena shrinkage cpu:0" in line for line in _Logger.lines)
    responses = model.execute([_Request(x=np.zeros((2, 4), np.float32))])
    np.testing.assert_array_equal(responses[0].output("y"), np.ones((2, 4), np.float32))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"enable_mem_arena": "maybe"}, "enable_mem_arena must be 1/0 or true/false"),
        (
            {"enable_mem_arena": "0", "memory.enable_memory_arena_shrinkage": "cpu:0"},
            "names cpu but enable_mem_arena is 0",
        ),
    ],
)
def test_contradictory_memory_parameters_fail_the_model_load(make_backend_model, parameters, message):
    with pytest.raises(ValueError, match=message):
        make_backend_model("CPU", parameters)
