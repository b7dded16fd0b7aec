"""A thin async wrapper over ``tritonclient.grpc.aio`` for the portrait ensembles.

It builds the ensemble's input tensors (docs/triton.md), reads the outputs into a
:class:`PortraitOutput`, and maps every Triton failure to a :class:`GatewayError`:

- ``INVALID_ARG`` with ``<code>: <step>: <detail>`` → that code (400; ``no_face_detected`` is left to
  the caller's contract),
- unreachable server / model not ready → 503 ``triton_unavailable`` with ``Retry-After``,
- deadline exceeded → 504 ``triton_timeout``,
- anything else → 500 ``internal_error``.

After a connection failure the gRPC channel is rebuilt on the next call, so the gateway recovers
by itself when Triton comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from facecraft.gateway.errors import GatewayError

ENSEMBLE_ENHANCED = "portrait"
ENSEMBLE_BASIC = "portrait_basic"
OUTPUT_NAMES = ("PNG", "JPEG", "FACE_BOX", "FACE_COUNT", "JPEG_CAP_MET", "OUTPUT_SIZE")
PIPELINE_ERROR_CODES = ("invalid_image", "image_too_large", "invalid_option", "no_face_detected")
_PIPELINE_ERROR = re.compile(
    r"\b(invalid_image|image_too_large|invalid_option|no_face_detected|internal_error):\s*(.*)", re.S
)
_UNAVAILABLE_STATUSES = ("UNAVAILABLE", "CANCELLED", "UNKNOWN")


@dataclass(frozen=True)
class PortraitRequest:
    """Options of one portrait, already validated (ranges in docs/triton.md)."""

    width: int
    height: int
    background: tuple[int, int, int]
    face_margin: float
    oval_mask: bool
    enhance: bool
    fidelity: float
    max_jpeg_kb: int
    touch_up: bool = False

    @property
    def model_name(self) -> str:
        return ENSEMBLE_ENHANCED if self.enhance else ENSEMBLE_BASIC


@dataclass(frozen=True)
class PortraitOutput:
    """What the ensemble returned for one image."""

    png: bytes
    jpeg: bytes
    face_box: tuple[int, int, int, int]
    face_count: int
    jpeg_cap_met: bool
    output_size: tuple[int, int]


def _tensor(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def build_inputs(image: bytes, request: PortraitRequest) -> list[grpcclient.InferInput]:
    """Ensemble input tensors, each with the leading batch dimension of 1."""
    inputs = [
        _tensor("IMAGE", np.array([[image]], dtype=np.object_), "BYTES"),
        _tensor("WIDTH", np.array([[request.width]], dtype=np.int32), "INT32"),
        _tensor("HEIGHT", np.array([[request.height]], dtype=np.int32), "INT32"),
        _tensor("BACKGROUND", np.array([request.background], dtype=np.uint8), "UINT8"),
        _tensor("FACE_MARGIN", np.array([[request.face_margin]], dtype=np.float32), "FP32"),
        _tensor("OVAL_MASK", np.array([[request.oval_mask]], dtype=bool), "BOOL"),
        _tensor("MAX_JPEG_KB", np.array([[request.max_jpeg_kb]], dtype=np.int32), "INT32"),
        _tensor("TOUCH_UP", np.array([[request.touch_up]], dtype=bool), "BOOL"),
    ]
    if request.enhance:
        inputs.append(_tensor("FIDELITY", np.array([[request.fidelity]], dtype=np.float32), "FP32"))
    return inputs


def _as_bytes(value) -> bytes:
    return bytes(value) if not isinstance(value, bytes) else value


def parse_outputs(result) -> PortraitOutput:
    """Read the ensemble outputs (an ``InferResult``-like object with ``as_numpy``)."""
    box = result.as_numpy("FACE_BOX").reshape(-1)
    size = result.as_numpy("OUTPUT_SIZE").reshape(-1)
    return PortraitOutput(
        png=_as_bytes(result.as_numpy("PNG").reshape(-1)[0]),
        jpeg=_as_bytes(result.as_numpy("JPEG").reshape(-1)[0]),
        face_box=tuple(int(v) for v in box[:4]),
        face_count=int(result.as_numpy("FACE_COUNT").reshape(-1)[0]),
        jpeg_cap_met=bool(result.as_numpy("JPEG_CAP_MET").reshape(-1)[0]),
        output_size=(int(size[0]), int(size[1])),
    )


def map_triton_error(error: InferenceServerException, retry_after_s: int) -> GatewayError:
    """Translate a Triton client exception into the gateway's error contract."""
    status = str(error.status() or "")
    message = str(error.message() or error)
    match = _PIPELINE_ERROR.search(message)
    if match:
        code, detail = match.group(1), match.group(2).strip()
        if code == "internal_error":
            return GatewayError(500, "internal_error", f"inference failed: {detail}")
        return GatewayError(400, code, detail)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return GatewayError(504, "triton_timeout", "the inference did not finish in time")
    if (
        any(name in status for name in _UNAVAILABLE_STATUSES)
        or "failed to connect" in message.lower()
        or "not ready" in message.lower()
        or "unavailable" in message.lower()
    ):
        return GatewayError(
            503,
            "triton_unavailable",
            f"the inference server is unavailable: {message}",
            headers={"Retry-After": str(retry_after_s)},
        )
    if "INVALID_ARG" in status:
        return GatewayError(400, "invalid_option", message)
    return GatewayError(500, "internal_error", f"inference failed: {message}")


class TritonGateway:
    """Async gRPC access to Triton, shared by all requests of one app."""

    def __init__(self, url: str, timeout_s: float, retry_after_s: int = 5):
        self.url = url
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> grpcclient.InferenceServerClient:
        async with self._lock:
            if self._client is None:
                self._client = grpcclient.InferenceServerClient(self.url)
            return self._client

    async def _drop_client(self, client: grpcclient.InferenceServerClient) -> None:
        async with self._lock:
            if self._client is client:
                self._client = None
        with contextlib.suppress(Exception):  # closing a broken channel may fail; it is dropped anyway
            await client.close()

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _call(self, method: str, *args, timeout_s: float | None = None, **kwargs):
        client = await self._get_client()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(
                getattr(client, method)(*args, client_timeout=timeout, **kwargs), timeout + 1.0
            )
        except InferenceServerException as error:
            mapped = map_triton_error(error, self.retry_after_s)
            if mapped.error == "triton_unavailable":
                await self._drop_client(client)
            raise mapped from None
        except asyncio.TimeoutError:
            await self._drop_client(client)
            raise GatewayError(504, "triton_timeout", "the inference server did not answer in time") from None
        except (OSError, ConnectionError) as error:
            await self._drop_client(client)
            raise GatewayError(
                503,
                "triton_unavailable",
                f"the inference server is unavailable: {error}",
                headers={"Retry-After": str(self.retry_after_s)},
            ) from None

    async def infer_portrait(self, image: bytes, request: PortraitRequest) -> PortraitOutput:
        """Run one image through ``portrait`` (enhance) or ``portrait_basic``."""
        outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        result = await self._call("infer", request.model_name, build_inputs(image, request), outputs=outputs)
        return parse_outputs(result)

    async def server_metadata(self, timeout_s: float = 3.0) -> dict:
        return await self._call("get_server_metadata", as_json=True, timeout_s=timeout_s)

    async def repository_index(self, timeout_s: float = 3.0) -> list[dict]:
        index = await self._call("get_model_repository_index", as_json=True, timeout_s=timeout_s)
        return list(index.get("models", []))

    async def model_ready(self, name: str, timeout_s: float = 3.0) -> bool:
        return bool(await self._call("is_model_ready", name, timeout_s=timeout_s))

    async def model_config(self, name: str, timeout_s: float = 3.0) -> dict:
        config = await self._call("get_model_config", name, as_json=True, timeout_s=timeout_s)
        return config.get("config", config)
