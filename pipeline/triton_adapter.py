"""Glue shared by the Triton Python-backend models in ``model_repository/*/1/model.py``.

Every model handles its requests one by one through :func:`execute_each`, so one bad request
becomes one error response and never fails the rest of the batch. ``triton_python_backend_utils``
exists only inside the Triton Python stub, so it is imported lazily.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping

import numpy as np

from facecraft.pipeline.errors import PipelineError

# A handler takes one request's inputs (name → array without the batch dimension, None when an
# optional input is absent) and returns its outputs (name → array without the batch dimension).
Handler = Callable[[Mapping[str, "np.ndarray | None"]], Mapping[str, np.ndarray]]


def _pb_utils():
    import triton_python_backend_utils as pb_utils

    return pb_utils


def error_message(error: BaseException, step: str) -> tuple[str, bool]:
    """(message, is_client_error): ``PipelineError`` → its own ``"<code>: <step>: <detail>"``;
    anything else → ``"internal_error: <step>: <Type>: <detail>"``."""
    if isinstance(error, PipelineError):
        return str(error), True
    return f"internal_error: {step}: {type(error).__name__}: {error}", False


def error_response(error: BaseException, step: str):
    """A Triton ``InferenceResponse`` carrying the error (INVALID_ARG for input errors, INTERNAL else)."""
    pb_utils = _pb_utils()
    message, client_error = error_message(error, step)
    code = pb_utils.TritonError.INVALID_ARG if client_error else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def unbatch(array: np.ndarray | None) -> np.ndarray | None:
    """Drop the leading batch dimension (each request of these models carries exactly one item)."""
    if array is None:
        return None
    if array.ndim == 0 or array.shape[0] != 1:
        raise PipelineError("invalid_option", "input", f"expected a batch of one, got shape {array.shape}")
    return array[0]


def first_bytes(array: np.ndarray) -> bytes:
    """The first element of a BYTES tensor (numpy object array of ``bytes``) as ``bytes``."""
    value = np.asarray(array).reshape(-1)[0]
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return bytes(value)


def bytes_tensor(value: bytes) -> np.ndarray:
    """A one-element BYTES array (object dtype) for an output."""
    return np.array([value], dtype=np.object_)


def read_inputs(request, names: tuple[str, ...]) -> dict[str, np.ndarray | None]:
    """name → numpy array without the batch dimension, or None when the input was not sent."""
    pb_utils = _pb_utils()
    inputs: dict[str, np.ndarray | None] = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        inputs[name] = None if tensor is None else unbatch(tensor.as_numpy())
    return inputs


def requested_only(outputs: Mapping[str, np.ndarray], requested) -> dict[str, np.ndarray]:
    """The entries of ``outputs`` whose names are in ``requested`` (a request's
    ``requested_output_names()``); all of them when ``requested`` is empty.

    An ensemble step is asked only for the outputs its ``output_map`` uses (``faces`` in
    face_enhancer: not FACE_BOXES / FACE_SCORES; ``decode`` in portrait_basic: not FIDELITY_W), a
    client or a BLS call for the ones it names. Returning more makes the Python stub prune the
    extra tensors itself (``PruneOutputTensors``); python_backend PR #390 (after 2.51) fixed a
    missing-GIL bug on the ``response_sender`` variant of that path. Our models return their
    responses from ``execute``, where 2.51 prunes with the GIL held, so this is defence in depth,
    not a proven crash fix (docs/reliability.md): a response holds exactly what was asked for."""
    names = set(requested or ())
    if not names:
        return dict(outputs)
    return {name: value for name, value in outputs.items() if name in names}


def execute_each(requests, step: str, input_names: tuple[str, ...], handler: Handler, logger=None) -> list:
    """Run ``handler`` on every request; return one response per request, in order, holding only
    the outputs that request asked for (:func:`requested_only`)."""
    pb_utils = _pb_utils()
    responses = []
    for request in requests:
        try:
            outputs = requested_only(
                handler(read_inputs(request, input_names)), request.requested_output_names()
            )
            tensors = [
                pb_utils.Tensor(name, np.asarray(value)[np.newaxis]) for name, value in outputs.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        except Exception as error:  # noqa: BLE001 - one request's failure must not fail the batch
            if logger is not None and not isinstance(error, PipelineError):
                logger.log_error(f"{step}: {traceback.format_exc()}")
            responses.append(error_response(error, step))
    return responses


class StageModel:
    """Base of every Triton Python model in ``model_repository/``: a subclass names its ``STEP``.

    ``STEP`` is a key of :data:`facecraft.pipeline.stages.STAGES`; the stage function and the
    input names come from there, so a ``model.py`` holds nothing but that name (and, where the
    step loads models, a :meth:`warm_up`).
    """

    STEP: str = ""

    def initialize(self, args) -> None:
        from facecraft.pipeline.stages import STAGE_INPUTS, STAGES

        self.logger = python_logger()
        self.args = args
        self.stage = self.bind_stage(STAGES[self.STEP], args)
        self.input_names = STAGE_INPUTS[self.STEP]
        self.warm_up()

    def bind_stage(self, stage, args) -> Handler:
        """The handler for ``execute``: the stage itself, or (steps that call other models) the
        stage with its Triton calls bound, e.g. ``functools.partial(stage, infer=bls_infer)``."""
        return stage

    def warm_up(self) -> None:
        """Load what the step needs once per model instance (nothing by default)."""

    def execute(self, requests) -> list:
        return execute_each(requests, self.STEP, self.input_names, self.stage, self.logger)

    def finalize(self) -> None:
        pass


def python_logger():
    """Triton's Python-backend logger (``log_info``/``log_error``...), or None outside Triton."""
    try:
        return _pb_utils().Logger
    except (ImportError, AttributeError):
        return None


# Triton's messages for a model it does not serve (never loaded, unloaded, still loading).
_UNAVAILABLE_MODEL_MESSAGES = ("unknown model", "not found", "not ready", "is not loaded", "unavailable")


def bls_infer(
    model: str, inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """One synchronous BLS call from inside a Python model: ``inputs`` (name → array WITH its batch
    dimension) to ``model``; returns the requested ``outputs`` as numpy arrays.

    A model Triton does not serve raises ``PipelineError(model_unavailable, ...)``; any other error
    of the call raises ``RuntimeError`` (an ``internal_error`` of the calling step)."""
    pb_utils = _pb_utils()
    request = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()],
        requested_output_names=list(outputs),
    )
    response = request.exec()
    if response.has_error():
        message = response.error().message()
        if any(text in message.lower() for text in _UNAVAILABLE_MODEL_MESSAGES):
            raise PipelineError("model_unavailable", "bls", f"{model}: {message}")
        raise RuntimeError(f"{model}: {message}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


def served_max_batch_size(model_dir: str | None, model: str, default: int = 1) -> int:
    """``max_batch_size`` of a sibling model as Triton serves it: its ``config.pbtxt`` beside this
    model's folder (``args["model_repository"]``) in the repository Triton was started on — the
    runtime copy, so a CPU instance plan's ``max_batch_size: 1`` is seen. ``default`` when the
    file cannot be read."""
    from pathlib import Path

    if not model_dir:
        return default
    path = Path(model_dir).parent / model / "config.pbtxt"
    try:
        from facecraft.runtime.model_config import load_config

        return max(1, int(load_config(path).max_batch_size) or default)
    except Exception:  # noqa: BLE001 - a missing/odd config must not stop the model from loading
        return default
