"""Python-based Triton backend named ``onnxruntime``: serves ``<model>/<version>/model.onnx``.

Installed by the embedded launcher as ``<backend-dir>/onnxruntime/model.py`` when the Triton
installation has no native ONNX Runtime backend (the ``nvidia-pytriton`` wheel). It honours the
same ``config.pbtxt`` as the native backend, so one model repository runs in both:

- inputs/outputs: names, dtypes and dims from ``args["model_config"]``;
- batching (``max_batch_size > 0``): the dynamic batcher hands ``execute`` a list of requests;
  their inputs are concatenated along axis 0, the session runs once on the whole batch, and the
  outputs are split back per request. A request that fails validation gets its own error
  response; if the batched run fails, each request is retried alone so one bad request cannot
  fail its neighbours;
- instance kind: ``KIND_GPU`` → ``CUDAExecutionProvider`` when onnxruntime offers it (else CPU,
  with a warning); ``KIND_CPU``/``KIND_AUTO`` → ``CPUExecutionProvider``;
- threads: config ``parameters { key: "intra_op_thread_count" ... }`` (the native backend's key),
  else ``$FACECRAFT_ORT_INTRA_OP_THREADS``, else onnxruntime's default;
- memory: the native backend's keys ``enable_mem_arena`` / ``enable_mem_pattern`` ("1"/"0") and
  ``memory.enable_memory_arena_shrinkage`` (e.g. "cpu:0", a run option: the arena returns what a
  large batch grew it by, instead of holding the peak for the life of the process);
- ``default_model_filename`` from the config, default ``model.onnx``.

The log names the execution provider and whether the weights are trained (``export.json`` next to
the model, written by ``facecraft export``); untrained weights are announced loudly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

ENV_INTRA_OP_THREADS = "FACECRAFT_ORT_INTRA_OP_THREADS"
ENV_INTER_OP_THREADS = "FACECRAFT_ORT_INTER_OP_THREADS"

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class RequestError(Exception):
    """A problem with one request's tensors; reported to that request only."""


def _parameter(config: dict, key: str) -> str | None:
    entry = config.get("parameters", {}).get(key)
    if isinstance(entry, dict):
        return entry.get("string_value")
    return None


def _positive_int(value: str | None, source: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError as error:
        raise ValueError(f"{source} must be an integer, got {value!r}") from error
    if number < 0:
        raise ValueError(f"{source} must be >= 0, got {number}")
    return number or None


def _flag(value: str | None, source: str) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ValueError(f"{source} must be 1/0 or true/false, got {value!r}")


class TritonPythonModel:
    """One instance of an ONNX model served by onnxruntime."""

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", self.config.get("name", "?"))
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        model_dir = Path(args["model_repository"])
        version = args.get("model_version", "1")
        filename = self.config.get("default_model_filename") or "model.onnx"
        model_path = model_dir / str(version) / filename
        if not model_path.is_file():
            raise pb_utils.TritonModelException(
                f"onnxruntime backend: {self.name}: {model_path} not found (run `facecraft export`)"
            )

        options = ort.SessionOptions()
        intra = _positive_int(
            _parameter(self.config, "intra_op_thread_count"), "parameter intra_op_thread_count"
        ) or _positive_int(os.environ.get(ENV_INTRA_OP_THREADS), f"${ENV_INTRA_OP_THREADS}")
        inter = _positive_int(
            _parameter(self.config, "inter_op_thread_count"), "parameter inter_op_thread_count"
        ) or _positive_int(os.environ.get(ENV_INTER_OP_THREADS), f"${ENV_INTER_OP_THREADS}")
        if intra:
            options.intra_op_num_threads = intra
        if inter:
            options.inter_op_num_threads = inter
        arena = _flag(_parameter(self.config, "enable_mem_arena"), "parameter enable_mem_arena")
        if arena is not None:
            options.enable_cpu_mem_arena = arena
        pattern = _flag(_parameter(self.config, "enable_mem_pattern"), "parameter enable_mem_pattern")
        if pattern is not None:
            options.enable_mem_pattern = pattern
        self.run_options = ort.RunOptions()
        shrinkage = _parameter(self.config, "memory.enable_memory_arena_shrinkage")
        if shrinkage:
            if arena is False and "cpu" in shrinkage:
                raise ValueError("memory.enable_memory_arena_shrinkage names cpu but enable_mem_arena is 0")
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", shrinkage)

        kind = args.get("model_instance_kind", "CPU").upper()
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        providers = self._providers(kind, device_id)
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        self.provider = self.session.get_providers()[0]

        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"]), i) for i in self.config["input"]
        ]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in self.config["output"]
        ]
        session_inputs = {meta.name: meta for meta in self.session.get_inputs()}
        session_outputs = {meta.name for meta in self.session.get_outputs()}
        for name, _, _ in self.inputs:
            if name not in session_inputs:
                raise pb_utils.TritonModelException(
                    f"onnxruntime backend: {self.name}: config input '{name}' is not an input of {model_path.name} "
                    f"(graph inputs: {sorted(session_inputs)})"
                )
        for name, _ in self.outputs:
            if name not in session_outputs:
                raise pb_utils.TritonModelException(
                    f"onnxruntime backend: {self.name}: config output '{name}' is not an output of {model_path.name} "
                    f"(graph outputs: {sorted(session_outputs)})"
                )
        self.session_dtypes = {name: _ORT_TO_NUMPY.get(meta.type) for name, meta in session_inputs.items()}

        pb_utils.Logger.log_info(
            f"onnxruntime backend: {self.name} v{version}: {model_path} on {self.provider} "
            f"(instance kind {kind}, intra-op threads {intra or 'default'}, max_batch_size {self.max_batch_size}, "
            f"arena shrinkage {shrinkage or 'off'})"
        )
        self._log_weights(model_dir / str(version) / "export.json")

    def _providers(self, kind: str, device_id: int) -> list:
        available = ort.get_available_providers()
        if "GPU" in kind:
            if "CUDAExecutionProvider" in available:
                return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
            pb_utils.Logger.log_warn(
                f"onnxruntime backend: {self.name}: instance kind {kind} but onnxruntime has no "
                f"CUDAExecutionProvider (available: {available}); running on CPUExecutionProvider"
            )
        return ["CPUExecutionProvider"]

    def _log_weights(self, metadata_path: Path) -> None:
        try:
            metadata = json.loads(metadata_path.read_text())
        except FileNotFoundError:
            pb_utils.Logger.log_warn(
                f"onnxruntime backend: {self.name}: no {metadata_path.name}; weights provenance unknown"
            )
            return
        except (OSError, ValueError) as error:
            pb_utils.Logger.log_warn(f"onnxruntime backend: {self.name}: unreadable {metadata_path}: {error}")
            return
        if metadata.get("trained") is False:
            pb_utils.Logger.log_warn(
                f"onnxruntime backend: {self.name}: UNTRAINED weights (seeded random, "
                f"weights_source={metadata.get('weights_source', '?')}, seed={metadata.get('seed', '?')}): "
                "outputs are NOT real results"
            )
        else:
            pb_utils.Logger.log_info(
                f"onnxruntime backend: {self.name}: trained weights ({metadata.get('weights_source', '?')}, preset {metadata.get('preset', '?')})"
            )

    def _request_arrays(self, request) -> dict[str, np.ndarray]:
        arrays = {}
        for name, dtype, spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise RequestError(f"missing input '{name}'")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise RequestError(f"input '{name}' has dtype {array.dtype}, expected {np.dtype(dtype)}")
            expected = [int(d) for d in spec.get("dims", [])]
            actual = list(array.shape[1:] if self.max_batch_size > 0 else array.shape)
            if len(actual) != len(expected) or any(
                e != -1 and e != a for e, a in zip(expected, actual, strict=True)
            ):
                raise RequestError(f"input '{name}' has shape {list(array.shape)}, expected dims {expected}")
            session_dtype = self.session_dtypes.get(name)
            if session_dtype is not None and array.dtype != session_dtype:
                array = array.astype(session_dtype)
            arrays[name] = array
        if self.max_batch_size > 0:
            batch_sizes = {array.shape[0] for array in arrays.values()}
            if len(batch_sizes) > 1:
                raise RequestError(f"inputs disagree on the batch dimension: {sorted(batch_sizes)}")
        return arrays

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [name for name, _ in self.outputs]
        results = self.session.run(names, feeds, self.run_options)
        return [
            np.ascontiguousarray(result.astype(dtype, copy=False))
            for result, (_, dtype) in zip(results, self.outputs, strict=True)
        ]

    def _response(self, outputs: list[np.ndarray]):
        tensors = [
            pb_utils.Tensor(name, array) for (name, _), array in zip(self.outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _error(message: str, code=None):
        if code is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    def _run_alone(self, feeds: dict[str, np.ndarray]):
        try:
            return self._response(self._run(feeds))
        except Exception as error:  # onnxruntime raises many types; report, do not crash the stub
            return self._error(f"onnxruntime backend: {self.name}: inference failed: {error}")

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batchable: list[tuple[int, dict[str, np.ndarray]]] = []
        invalid_arg = getattr(pb_utils.TritonError, "INVALID_ARG", None)
        for index, request in enumerate(requests):
            try:
                batchable.append((index, self._request_arrays(request)))
            except RequestError as error:
                responses[index] = self._error(f"onnxruntime backend: {self.name}: {error}", invalid_arg)

        if self.max_batch_size <= 0 or len(batchable) == 1:
            for index, feeds in batchable:
                responses[index] = self._run_alone(feeds)
            return responses
        if not batchable:
            return responses

        sizes = [next(iter(feeds.values())).shape[0] for _, feeds in batchable]
        try:
            merged = {
                name: np.concatenate([feeds[name] for _, feeds in batchable], axis=0)
                for name, _, _ in self.inputs
            }
            outputs = self._run(merged)
        except Exception:
            for index, feeds in batchable:
                responses[index] = self._run_alone(feeds)
            return responses
        bounds = np.cumsum([0, *sizes])
        for (index, _), start, stop in zip(batchable, bounds[:-1], bounds[1:], strict=True):
            responses[index] = self._response([output[start:stop] for output in outputs])
        return responses

    def finalize(self) -> None:
        self.session = None
