"""A thin async wrapper over ``tritonclient.grpc.aio`` for the portrait ensembles.

Tensors are encoded and decoded by :mod:`facecraft.client` (the one implementation of the
ensemble contract, docs/triton.md); this module adds the gateway's connection handling and maps
every Triton failure to a :class:`GatewayError`:

- ``INVALID_ARG`` with ``<code>: <step>: <detail>`` → that code (400; ``no_face_detected`` is left to
  the caller's contract),
- unreachable server, model not ready or unloaded, a dead Python-backend stub ("Stub process …
  is not healthy"), a stream reset by a dying server, or a call cancelled by the transport
  → 503 ``triton_unavailable`` with ``Retry-After`` (transient: retry later),
- an inference on an ensemble that is (or one of whose steps is) unloaded while the server itself
  is ready → 503 ``model_unavailable`` with ``Retry-After``, naming the models that are not READY
  (:meth:`TritonGateway.explain_unavailable`; load them with ``POST /api/v1/models/{name}/load``),
- deadline exceeded → 504 ``triton_timeout``,
- anything else → 500 ``internal_error``.

After a connection failure new calls get a fresh gRPC channel, so the gateway recovers by itself
when Triton comes back. The old channel is closed only once the calls still running on it have
finished: closing a ``grpc.aio`` channel cancels every call on it.

"Stub process '<instance>' is not healthy" is not only transient: Triton 2.51's Python backend
gives up on a request when the stub's health thread misses one 1-second check (a process stalled
for over a second), but the stub still runs that request and later answers it. The instance is
then out of step with its stub: its next request takes the stale answer (another request's
output) or aborts the whole server (``boost::interprocess::lock_exception``). The gateway therefore
reloads the model of that instance at once (:meth:`TritonGateway.recover_stub`), which replaces
the stub, when ``recover_stubs`` is on (``FACECRAFT_RECOVER_UNHEALTHY_STUBS``, docs/reliability.md),
and drops (503 ``triton_unavailable``) the answer of every inference that ran while such an answer
came or a reload was pending: it may be another request's. Only this process's calls are seen: a
second gateway sharing the Triton drops nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from facecraft.client import transport
from facecraft.client.options import BASIC_MODEL, ENHANCED_MODEL, PortraitOptions, encode_inputs
from facecraft.client.processors import (
    ProcessorResult,
    identity_from_outputs,
    identity_request,
    processor_request,
    result_from_processor_outputs,
)
from facecraft.client.result import PortraitResult, result_from_outputs
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.tasks import current_task_is_cancelled

ENSEMBLE_ENHANCED = ENHANCED_MODEL
ENSEMBLE_BASIC = BASIC_MODEL
PIPELINE_ERROR_CODES = (
    "invalid_image",
    "image_too_large",
    "invalid_option",
    "no_face_detected",
    "model_unavailable",
)
_PIPELINE_ERROR = re.compile(
    r"\b(invalid_image|image_too_large|invalid_option|no_face_detected|no_source_face|model_unavailable|internal_error)"
    r":\s*(.*)",
    re.S,
)
_UNAVAILABLE_STATUSES = ("UNAVAILABLE", "CANCELLED", "UNKNOWN")
# Messages of transient server-side failures, whatever their gRPC status (a dead stub answers
# INTERNAL): a stub killed or restarting, a model unloaded or not ready during a restart, a server
# shutting down, an HTTP/2 stream torn down by a dying server.
_TRANSIENT_MESSAGE = re.compile(
    r"stub process\b.*\b(not healthy|unhealthy|restart|died|exited|terminated)"
    r"|\bstub\b.*\bnot healthy"
    r"|failed to connect|not ready|unavailable|unknown model"
    r"|shutting down|server is stopping|rst_stream|goaway|socket closed|connection reset|broken pipe",
    re.I | re.S,
)

# The Python backend's answer when a stub missed a health check (r24.10 stub_launcher.cc); the
# instance is named "<model>_<group>_<index>" (or "<group name>_<index>").
_UNHEALTHY_STUB = re.compile(r"stub process '([^']+)' is not healthy", re.I)

# Triton's answer for an inference on a model that is not loaded (or not ready).
_MODEL_NOT_LOADED = re.compile(r"unknown model: '([^']+)'|model '([^']+)' is not (?:ready|found)", re.I)

log = logging.getLogger("facecraft.gateway.triton")


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
    preset: str | None = None
    layout: str | None = None

    @property
    def model_name(self) -> str:
        return ENSEMBLE_ENHANCED if self.enhance else ENSEMBLE_BASIC

    def to_options(self) -> PortraitOptions:
        """The client's options with every value set (``portrait_basic`` has no FIDELITY input)."""
        return PortraitOptions(
            enhance=self.enhance,
            width=self.width,
            height=self.height,
            background=tuple(self.background),
            face_margin=self.face_margin,
            oval_mask=self.oval_mask,
            fidelity=self.fidelity if self.enhance else None,
            max_jpeg_kb=self.max_jpeg_kb,
            touch_up=self.touch_up,
            preset=self.preset,
            layout=self.layout,
        )


def build_inputs(image: bytes, request: PortraitRequest) -> list[grpcclient.InferInput]:
    """Ensemble input tensors, each with the leading batch dimension of 1 (every option sent)."""
    return transport.build_inputs("grpc", encode_inputs(image, request.to_options()))


def map_triton_error(error: InferenceServerException, retry_after_s: int) -> GatewayError:
    """Translate a Triton client exception into the gateway's error contract."""
    status = str(error.status() or "")
    message = str(error.message() or error)
    match = _PIPELINE_ERROR.search(message)
    if match:
        code, detail = match.group(1), match.group(2).strip()
        if code == "internal_error":
            return GatewayError(500, "internal_error", f"inference failed: {detail}")
        if code == "model_unavailable":  # a step's model (BLS) is not loaded: facecraft.processors
            return model_unavailable_error("", detail, retry_after_s)
        return GatewayError(400, code, detail)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return GatewayError(504, "triton_timeout", "the inference did not finish in time")
    if any(name in status for name in _UNAVAILABLE_STATUSES) or _TRANSIENT_MESSAGE.search(message):
        return unavailable_error(message, retry_after_s)
    if "INVALID_ARG" in status:
        return GatewayError(400, "invalid_option", message)
    return GatewayError(500, "internal_error", f"inference failed: {message}")


def unavailable_error(reason: str, retry_after_s: int) -> GatewayError:
    """503 ``triton_unavailable`` with ``Retry-After``: a transient failure, worth retrying."""
    return GatewayError(
        503,
        "triton_unavailable",
        f"the inference server is unavailable: {reason}",
        headers={"Retry-After": str(retry_after_s)},
    )


def model_unavailable_error(model: str, message: str, retry_after_s: int) -> GatewayError:
    """503 ``model_unavailable`` with ``Retry-After`` for a model that is not loaded."""
    return GatewayError(503, "model_unavailable", message, headers={"Retry-After": str(retry_after_s)})


def ensemble_steps(repository: Path, model: str) -> list[str]:
    """The composing models of ensemble ``model`` in ``repository`` (nested ensembles expanded,
    each name once, in step order; the ensembles themselves excluded); [] for a model that is not
    an ensemble or whose config cannot be read."""
    from facecraft.runtime.model_config import ConfigEditError, load_config

    found: list[str] = []

    def walk(name: str, seen: set[str]) -> None:
        try:
            config = load_config(Path(repository) / name / "config.pbtxt")
        except (OSError, ConfigEditError):
            return
        for step in config.ensemble_scheduling.step:
            if step.model_name in seen:
                continue
            seen.add(step.model_name)
            before = len(found)
            walk(step.model_name, seen)
            if len(found) == before and not _is_ensemble(repository, step.model_name):
                found.append(step.model_name)

    walk(model, {model})
    return found


def _is_ensemble(repository: Path, name: str) -> bool:
    from facecraft.runtime.model_config import ConfigEditError, load_config

    try:
        return load_config(Path(repository) / name / "config.pbtxt").platform == "ensemble"
    except (OSError, ConfigEditError):
        return False


class _Channel:
    """One gRPC client (channel) and the number of calls running on it."""

    def __init__(self, client: grpcclient.InferenceServerClient):
        self.client = client
        self.in_flight = 0
        self.retired = False


class TritonGateway:
    """Async gRPC access to Triton, shared by all requests of one app.

    Calls share one channel. A call that finds Triton unavailable (or times out) retires the
    channel: later calls open a new one, and the retired one is closed when its last running call
    ends — never under a call that is still using it.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float,
        retry_after_s: int = 5,
        repository: Path | None = None,
        recover_stubs: bool = True,
        on_recovery=None,
    ):
        self.url = url
        # Reload a model whose Python stub Triton declared unhealthy (module doc); on_recovery(model,
        # outcome) is told of each reload ("reloaded" or "failed"), e.g. for a metric.
        self.recover_stubs = recover_stubs
        self.on_recovery = on_recovery
        self._recoveries: dict[str, asyncio.Task] = {}
        self._stub_incidents = 0  # unhealthy-stub answers seen
        # The folder Triton serves, to name an unloaded ensemble's step models (None: not known).
        self.repository = Path(repository) if repository else None
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._current: _Channel | None = None
        self._open: set[_Channel] = set()
        self._closing: set[asyncio.Task] = set()

    def _acquire(self) -> _Channel:
        # No await between the check and the count: safe without a lock on one event loop.
        if self._current is None:
            self._current = _Channel(grpcclient.InferenceServerClient(self.url))
            self._open.add(self._current)
        self._current.in_flight += 1
        return self._current

    def _release(self, channel: _Channel) -> None:
        channel.in_flight -= 1
        if channel.retired and channel.in_flight == 0:
            self._close_soon(channel)

    def _retire(self, channel: _Channel) -> None:
        """New calls get a fresh channel; this one closes once its running calls are done."""
        if self._current is channel:
            self._current = None
        channel.retired = True

    def _close_soon(self, channel: _Channel) -> None:
        # In its own task, so that a caller cancelled meanwhile cannot leave the channel half closed.
        if channel not in self._open:
            return
        self._open.discard(channel)
        task = asyncio.get_running_loop().create_task(self._close_quietly(channel))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_quietly(channel: _Channel) -> None:
        with contextlib.suppress(Exception):  # closing a broken channel may fail; it is dropped anyway
            await channel.client.close()

    @property
    def open_channels(self) -> int:
        """Channels not closed yet (the current one plus retired ones with calls still running)."""
        return len(self._open)

    def _recover_if_stub_unhealthy(self, message: str) -> None:
        match = _UNHEALTHY_STUB.search(message)
        if not match:
            return
        self._stub_incidents += 1  # answers of calls running meanwhile are dropped (infer)
        if not self.recover_stubs:
            return
        instance = match.group(1)
        if instance in self._recoveries:  # one reload per instance at a time
            return
        task = asyncio.get_running_loop().create_task(self.recover_stub(instance))
        self._recoveries[instance] = task
        task.add_done_callback(lambda _task: self._recoveries.pop(instance, None))

    async def wait_recoveries(self, timeout_s: float | None = None) -> bool:
        """Wait until every reload started after an unhealthy stub has ended (at most
        ``timeout_s``); True when none is left running."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        while self._recoveries:
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(list(self._recoveries.values()), timeout=left)
        return True

    async def recover_stub(self, instance: str) -> str | None:
        """Reload the model of Python-backend ``instance`` (e.g. ``"decode_0_0"``): unloaded and
        loaded again (the ensembles using it with it), which starts a new stub in step with
        Triton. Returns the model's name, or None when the reload failed (logged; the model keeps
        its broken instance and Triton may abort: supervise it)."""
        model = re.sub(r"(_\d+){1,2}$", "", instance)
        try:
            names = [entry.get("name", "") for entry in await self.repository_index()]
            owners = [name for name in names if re.fullmatch(re.escape(name) + r"(_\d+){1,2}", instance)]
            model = max(owners, key=len) if owners else model
            log.warning(
                "Triton gave up on Python stub %s (it died, or missed a health check: a stall of over 1 s); "
                "reloading model %s so that its next request cannot take a stale answer or abort Triton",
                instance,
                model,
            )
            await self._replace_instances(model)
        except Exception as error:  # noqa: BLE001 - a background task: log it, never lose it
            message = error.message if isinstance(error, GatewayError) else repr(error)
            log.error(
                "reloading model %s after its stub %s went unhealthy failed: %s", model, instance, message
            )
            self._tell_recovery(model, "failed")
            return None
        log.warning("model %s reloaded: a new stub replaced %s", model, instance)
        self._tell_recovery(model, "reloaded")
        return model

    async def _replace_instances(self, model: str, timeout_s: float = 120.0) -> None:
        """Unload ``model``, wait until Triton has (its unload returns at once), and load it:
        new instances, new stubs. A plain load is not enough: Triton skips a load of a loaded
        model whose files it finds unchanged (measured on 2.51, facecraft serve's repository)."""
        await self._call("unload_model", model, timeout_s=timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await self._call("is_model_ready", model, timeout_s=3.0):
            if asyncio.get_running_loop().time() > deadline:
                raise GatewayError(504, "triton_timeout", f"{model} was not unloaded in {timeout_s:g} s")
            await asyncio.sleep(0.1)
        await self._call("load_model", model, timeout_s=600.0)

    def _tell_recovery(self, model: str, outcome: str) -> None:
        if self.on_recovery is not None:
            self.on_recovery(model, outcome)

    async def close(self) -> None:
        """Close every channel (app shutdown: no call is expected to be running); a model reload
        still running after 10 s is abandoned (its channel closes under it)."""
        await self.wait_recoveries(timeout_s=10.0)
        for task in list(self._recoveries.values()):
            task.cancel()
        self._current = None
        channels, self._open = list(self._open), set()
        for channel in channels:
            await self._close_quietly(channel)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _call(self, method: str, *args, timeout_s: float | None = None, **kwargs):
        channel = self._acquire()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(
                getattr(channel.client, method)(*args, client_timeout=timeout, **kwargs), timeout + 1.0
            )
        except InferenceServerException as error:
            mapped = map_triton_error(error, self.retry_after_s)
            if mapped.error == "triton_unavailable":
                self._retire(channel)
                self._recover_if_stub_unhealthy(str(error.message() or error))
            elif mapped.error == "internal_error":
                log.warning("%s failed: status=%s %s", method, error.status(), mapped.message)
            raise mapped from None
        except asyncio.TimeoutError:
            self._retire(channel)
            raise GatewayError(504, "triton_timeout", "the inference server did not answer in time") from None
        except (OSError, ConnectionError) as error:
            self._retire(channel)
            raise unavailable_error(str(error), self.retry_after_s) from None
        except asyncio.CancelledError:
            if current_task_is_cancelled():
                raise
            # Not our cancellation: the transport cancelled the call (its channel went away).
            self._retire(channel)
            log.warning("%s was cancelled by the gRPC transport; answering triton_unavailable", method)
            raise unavailable_error("the call was cancelled by the connection", self.retry_after_s) from None
        finally:
            self._release(channel)

    async def infer(self, model: str, inputs, outputs=None):
        """``infer`` on ``model``; an unloaded model (or step) answers 503 ``model_unavailable``.

        An answer that may be another request's is dropped (503 ``triton_unavailable``): one whose
        call overlapped an unhealthy-stub answer, or a model reload after one (module doc)."""
        incidents, recovering = self._stub_incidents, bool(self._recoveries)
        try:
            result = await self._call("infer", model, inputs, outputs=outputs)
        except GatewayError as error:
            if error.error != "triton_unavailable" or not _MODEL_NOT_LOADED.search(error.message):
                raise
            explained = await self.explain_unavailable(model)
            if explained is None:
                raise
            raise explained from None
        if recovering or self._recoveries or self._stub_incidents != incidents:
            log.warning(
                "dropped an answer of %s: it ran while a Python stub was out of step with Triton", model
            )
            raise unavailable_error(
                "an answer was dropped because a Python stub of Triton was out of step with it meanwhile "
                "(it may belong to another request); retry",
                self.retry_after_s,
            )
        return result

    async def explain_unavailable(self, model: str) -> GatewayError | None:
        """503 ``model_unavailable`` naming the models of the repository that are not READY, when
        Triton itself is ready (a model was unloaded, or failed to load); None while the server is
        not ready (a restart: that stays ``triton_unavailable``) or cannot be asked."""
        try:
            if not await self._call("is_server_ready", timeout_s=3.0):
                return None
            index = await self.repository_index()
        except GatewayError:
            return None
        states = {entry.get("name"): entry for entry in index}
        down = {name for name, entry in states.items() if entry.get("state") != "READY"}
        if model in states and model not in down:
            return None  # READY again: a transient answer, retry
        steps = ensemble_steps(self.repository, model) if self.repository else []
        if steps:
            causes = [name for name in steps if name in down or name not in states]
        else:
            causes = sorted(down - {model})
        details = ", ".join(
            f"{name} ({states.get(name, {}).get('state') or 'not in the repository'}"
            f"{': ' + states[name]['reason'] if states.get(name, {}).get('reason') else ''})"
            for name in causes
        )
        if causes:
            verb = "is" if len(causes) == 1 else "are"
            advice = f" because {details} {verb} not loaded; load {causes[0] if len(causes) == 1 else 'them'}"
            paths = ", ".join(f"POST /api/v1/models/{name}/load" for name in causes)
        else:
            advice, paths = "; load it", f"POST /api/v1/models/{model}/load"
        return model_unavailable_error(
            model,
            f"model {model!r} is unavailable{advice} with {paths}",
            self.retry_after_s,
        )

    async def infer_portrait(self, image: bytes, request: PortraitRequest) -> PortraitResult:
        """Run one image through ``portrait`` (enhance) or ``portrait_basic``."""
        outputs = transport.build_outputs("grpc")
        result = await self.infer(request.model_name, build_inputs(image, request), outputs=outputs)
        return result_from_outputs(result.as_numpy)

    async def server_ready(self, timeout_s: float = 3.0) -> bool:
        return bool(await self._call("is_server_ready", timeout_s=timeout_s))

    async def load_model(self, name: str, timeout_s: float = 600.0) -> None:
        """Triton's repository API ``load`` (a loaded model is reloaded; it serves until the new
        one is ready). A model that fails to load → 409 ``model_load_failed`` with Triton's reason."""
        try:
            await self._call("load_model", name, timeout_s=timeout_s)
        except GatewayError as error:
            if error.error in ("internal_error", "invalid_option"):
                raise GatewayError(
                    409, "model_load_failed", f"Triton could not load {name!r}: {error.message}"
                ) from None
            raise

    async def unload_model(self, name: str, timeout_s: float = 120.0) -> None:
        """Triton's repository API ``unload`` (ensembles using the model become unavailable)."""
        await self._call("unload_model", name, timeout_s=timeout_s)

    async def infer_processor(
        self, name: str, image: bytes | dict[str, bytes], options: dict
    ) -> ProcessorResult:
        """Run one image through processor ``name``'s ensemble (registry; ``options`` resolved)."""
        model, specs, output_names, resolved = processor_request(name, image, options)
        inputs = transport.build_inputs("grpc", specs)
        outputs = transport.build_outputs("grpc", output_names)
        result = await self.infer(model, inputs, outputs=outputs)
        return result_from_processor_outputs(name, result.as_numpy, resolved)

    async def identity(self, name: str, image: bytes, options: dict):
        """Processor ``name``'s identity embedding of ``image`` (face_swapper: the source's,
        float32 [512], ``face_swapper_source``); raises as :meth:`infer` (``no_source_face`` 400)."""
        model, specs, output_names = identity_request(name, image, options)
        inputs = transport.build_inputs("grpc", specs)
        outputs = transport.build_outputs("grpc", output_names)
        result = await self.infer(model, inputs, outputs=outputs)
        return identity_from_outputs(name, result.as_numpy)

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
