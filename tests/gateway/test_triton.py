"""The Triton wrapper without Triton: input tensors, output parsing, error mapping, and the call
wrapper's channel handling over a scripted stand-in for the ``grpc.aio`` client.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from facecraft.gateway import triton as triton_module
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.triton import (
    ENSEMBLE_BASIC,
    ENSEMBLE_ENHANCED,
    PortraitRequest,
    TritonGateway,
    build_inputs,
    map_triton_error,
)

REQUEST = PortraitRequest(
    width=300,
    height=400,
    background=(1, 2, 3),
    face_margin=0.5,
    oval_mask=False,
    enhance=True,
    fidelity=0.25,
    max_jpeg_kb=64,
    touch_up=True,
)


def _by_name(inputs):
    return {tensor.name(): tensor for tensor in inputs}


def test_enhanced_request_inputs_follow_the_contract():
    tensors = _by_name(build_inputs(b"\xff\xd8\xffdata", REQUEST))
    assert REQUEST.model_name == ENSEMBLE_ENHANCED
    expected = {
        "IMAGE": ("BYTES", [1, 1]),
        "WIDTH": ("INT32", [1, 1]),
        "HEIGHT": ("INT32", [1, 1]),
        "BACKGROUND": ("UINT8", [1, 3]),
        "FACE_MARGIN": ("FP32", [1, 1]),
        "OVAL_MASK": ("BOOL", [1, 1]),
        "FIDELITY": ("FP32", [1, 1]),
        "MAX_JPEG_KB": ("INT32", [1, 1]),
        "TOUCH_UP": ("BOOL", [1, 1]),
    }
    assert {name: (t.datatype(), t.shape()) for name, t in tensors.items()} == expected


def test_basic_request_has_no_fidelity_and_uses_portrait_basic():
    basic = PortraitRequest(**{**REQUEST.__dict__, "enhance": False})
    assert basic.model_name == ENSEMBLE_BASIC
    assert "FIDELITY" not in _by_name(build_inputs(b"x", basic))


@pytest.mark.parametrize(
    "message, status, code",
    [
        (
            "no_face_detected: detect: no face found in a 320x240 image",
            "StatusCode.INVALID_ARGUMENT",
            "no_face_detected",
        ),
        (
            "in ensemble 'portrait', invalid_image: decode: not an image",
            "StatusCode.INVALID_ARGUMENT",
            "invalid_image",
        ),
        ("image_too_large: decode: 60000000 pixels", "StatusCode.INVALID_ARGUMENT", "image_too_large"),
        ("invalid_option: decode: WIDTH must be 64..4096", "StatusCode.INVALID_ARGUMENT", "invalid_option"),
    ],
)
def test_pipeline_errors_map_to_their_code(message, status, code):
    error = map_triton_error(InferenceServerException(message, status), retry_after_s=3)
    assert (error.status_code, error.error) == (400, code)
    assert error.message.split(": ")[0] in ("detect", "decode")


def test_internal_and_transport_errors():
    internal = map_triton_error(
        InferenceServerException("internal_error: compose: boom", "StatusCode.INTERNAL"), 3
    )
    assert (internal.status_code, internal.error) == (500, "internal_error")
    down = map_triton_error(
        InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), 7
    )
    assert (down.status_code, down.error, down.headers["Retry-After"]) == (503, "triton_unavailable", "7")
    slow = map_triton_error(InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), 3)
    assert (slow.status_code, slow.error) == (504, "triton_timeout")
    not_ready = map_triton_error(
        InferenceServerException(
            "Request for unknown model: 'portrait' is not ready", "StatusCode.UNAVAILABLE"
        ),
        3,
    )
    assert not_ready.error == "triton_unavailable"
    other = map_triton_error(InferenceServerException("something odd", "StatusCode.INTERNAL"), 3)
    assert (other.status_code, other.error) == (500, "internal_error")


@pytest.mark.parametrize(
    "message, status",
    [
        ("Stub process 'compose_0_0' is not healthy.", "StatusCode.INTERNAL"),
        ("in ensemble 'portrait', Stub process 'compose_0_0' is not healthy.", "StatusCode.INTERNAL"),
        ("Stub process 'detect_0_0' is unhealthy and it will be restarted.", "StatusCode.INTERNAL"),
        (
            "in ensemble 'portrait_basic', Request for unknown model: 'compose' is not found",
            "StatusCode.INTERNAL",
        ),
        ("Received RST_STREAM with error code 2", "StatusCode.INTERNAL"),
        ("Socket closed", "StatusCode.INTERNAL"),
    ],
)
def test_transient_server_failures_are_retryable_503(message, status):
    error = map_triton_error(InferenceServerException(message, status), retry_after_s=4)
    assert (error.status_code, error.error, error.headers["Retry-After"]) == (503, "triton_unavailable", "4")
    assert message in error.message


def test_a_pipeline_internal_error_naming_a_stub_stays_500():
    error = map_triton_error(
        InferenceServerException("internal_error: compose: stub failed to encode", "StatusCode.INTERNAL"), 3
    )
    assert (error.status_code, error.error) == (500, "internal_error")


# --------------------------------------------------------------------------- TritonGateway._call


class _FakeAioClient:
    """Stands in for ``tritonclient.grpc.aio.InferenceServerClient`` (no Triton needed).

    ``infer`` runs the next scripted step: an exception to raise, or "block" to wait until
    released. Like ``grpc.aio``, ``close()`` cancels the calls still waiting on the channel, which
    then see ``asyncio.CancelledError`` without their task being cancelled.
    """

    instances: list[_FakeAioClient] = []
    script: list = []
    models: list[str] = []  # the repository index
    loaded: list[str] = []  # load_model calls
    unloaded: list[str] = []  # unload_model calls

    def __init__(self, url):
        self.url = url
        self.closed = False
        self.pending: list[asyncio.Future] = []
        self.calls = 0
        _FakeAioClient.instances.append(self)

    async def infer(self, model_name, inputs, outputs=None, client_timeout=None):
        self.calls += 1
        step = _FakeAioClient.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, _FakeResult):
            return step
        assert step == "block"
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return await future

    async def get_model_repository_index(self, as_json=False, client_timeout=None):
        return {"models": [{"name": name, "state": "READY"} for name in _FakeAioClient.models]}

    async def unload_model(self, model_name, client_timeout=None):
        _FakeAioClient.unloaded.append(model_name)

    async def is_model_ready(self, model_name, client_timeout=None):
        return model_name not in _FakeAioClient.unloaded

    async def load_model(self, model_name, client_timeout=None):
        _FakeAioClient.loaded.append(model_name)

    def release_all(self, value):
        for future in self.pending:
            if not future.done():
                future.set_result(value)

    async def close(self):
        self.closed = True
        for future in self.pending:
            future.cancel()


@pytest.fixture
def fake_aio_client(monkeypatch):
    _FakeAioClient.instances, _FakeAioClient.script = [], []
    _FakeAioClient.models, _FakeAioClient.loaded, _FakeAioClient.unloaded = [], [], []
    monkeypatch.setattr(triton_module.grpcclient, "InferenceServerClient", _FakeAioClient)
    return _FakeAioClient


async def _until(condition, timeout_s=2.0):
    """Let the event loop run until ``condition()`` holds (the calls reach the fake client)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


class _FakeResult:
    """Stands in for tritonclient's InferResult (only ``as_numpy``) in pure tests."""

    def __init__(self, arrays):
        self.arrays = arrays

    def as_numpy(self, name):
        return self.arrays.get(name)  # tritonclient answers None for an output it did not get


def _portrait_result():
    return _FakeResult(
        {
            "PNG": np.array([[b"png"]], dtype=np.object_),
            "JPEG": np.array([[b"jpeg"]], dtype=np.object_),
            "FACE_BOX": np.array([[1, 2, 3, 4]], dtype=np.int32),
            "FACE_COUNT": np.array([[1]], dtype=np.int32),
            "JPEG_CAP_MET": np.array([[True]]),
            "OUTPUT_SIZE": np.array([[300, 400]], dtype=np.int32),
        }
    )


def test_dead_stub_during_a_call_answers_triton_unavailable(fake_aio_client):
    fake_aio_client.script = [
        InferenceServerException("Stub process 'compose_0_0' is not healthy.", "StatusCode.INTERNAL")
    ]
    gateway = TritonGateway("triton:8001", timeout_s=5.0, retry_after_s=6)

    async def scenario():
        with pytest.raises(GatewayError) as info:
            await gateway.infer_portrait(b"jpeg", REQUEST)
        await gateway.close()
        return info.value

    error = asyncio.run(scenario())
    assert (error.status_code, error.error, error.headers["Retry-After"]) == (503, "triton_unavailable", "6")


@pytest.mark.parametrize("recover", [True, False])
def test_an_unhealthy_stub_has_its_own_model_reloaded_once(fake_aio_client, recover):
    """The model owning instance ``face_enhance_0_0`` is reloaded (not ``face_enhancer``), once for
    two calls that meet the same dead stub; nothing when recovery is off (Triton itself in
    tests/gateway/test_triton_stub_recovery.py)."""
    unhealthy = "in ensemble 'face_enhancer', Stub process 'face_enhance_0_0' is not healthy."
    fake_aio_client.script = [InferenceServerException(unhealthy, "StatusCode.INTERNAL") for _ in range(2)]
    fake_aio_client.models = ["face_enhancer", "face_enhance", "faces"]
    outcomes = []
    gateway = TritonGateway(
        "triton:8001", 5.0, recover_stubs=recover, on_recovery=lambda *a: outcomes.append(a)
    )

    async def scenario():
        for _ in range(2):
            with pytest.raises(GatewayError):
                await gateway.infer("face_enhancer", [])
        assert await gateway.wait_recoveries(timeout_s=5)
        await gateway.close()

    asyncio.run(scenario())
    assert fake_aio_client.loaded == fake_aio_client.unloaded == (["face_enhance"] if recover else [])
    assert outcomes == ([("face_enhance", "reloaded")] if recover else [])


def test_answers_that_ran_beside_an_unhealthy_stub_are_dropped_until_its_reload(fake_aio_client, monkeypatch):
    """A call in flight when another meets "not healthy" may get the stale answer: dropped (503);
    so is one that starts while the reload runs; after the reload answers are served again."""
    unhealthy = "Stub process 'decode_0_0' is not healthy."
    ok = _FakeResult({"OUT": np.array([1])})
    fake_aio_client.script = ["block", InferenceServerException(unhealthy, "StatusCode.INTERNAL"), ok, ok]
    fake_aio_client.models = ["decode"]
    reload_started, reload_may_end = asyncio.Event(), asyncio.Event()

    async def slow_load(self, model_name, client_timeout=None):
        reload_started.set()
        await reload_may_end.wait()
        _FakeAioClient.loaded.append(model_name)

    monkeypatch.setattr(fake_aio_client, "load_model", slow_load)
    gateway = TritonGateway("triton:8001", 5.0)

    async def scenario():
        running = asyncio.create_task(gateway.infer("portrait", []))
        await _until(lambda: fake_aio_client.instances and fake_aio_client.instances[0].pending)
        with pytest.raises(GatewayError):
            await gateway.infer("portrait", [])  # the unhealthy answer: a reload starts
        await reload_started.wait()
        fake_aio_client.instances[0].release_all(ok)  # the call that ran beside it
        with pytest.raises(GatewayError) as dropped:
            await running
        with pytest.raises(GatewayError) as during:
            await gateway.infer("portrait", [])  # started while the reload runs
        reload_may_end.set()
        assert await gateway.wait_recoveries(timeout_s=5)
        after = await gateway.infer("portrait", [])
        await gateway.close()
        return dropped.value, during.value, after

    dropped, during, after = asyncio.run(scenario())
    for error in (dropped, during):
        assert (error.status_code, error.error) == (503, "triton_unavailable")
        assert "may belong to another request" in error.message
    assert after is ok and fake_aio_client.loaded == ["decode"]


def test_a_failing_call_does_not_close_the_channel_under_other_calls(fake_aio_client):
    fake_aio_client.script = [
        "block",
        InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE"),
        "block",
    ]
    gateway = TritonGateway("triton:8001", timeout_s=5.0)

    async def scenario():
        slow = asyncio.create_task(gateway.infer_portrait(b"jpeg", REQUEST))
        await _until(lambda: fake_aio_client.instances and fake_aio_client.instances[0].pending)
        (first,) = fake_aio_client.instances
        with pytest.raises(GatewayError) as info:
            await gateway.infer_portrait(b"jpeg", REQUEST)
        assert info.value.error == "triton_unavailable"
        await asyncio.sleep(0.01)
        assert not first.closed, "the channel was closed under a call still running on it"
        # New calls get a fresh channel meanwhile.
        fresh = asyncio.create_task(gateway.infer_portrait(b"jpeg", REQUEST))
        await _until(lambda: len(fake_aio_client.instances) == 2 and fake_aio_client.instances[1].pending)
        first.release_all(_portrait_result())
        output = await slow
        await asyncio.sleep(0.01)
        assert first.closed, "a retired channel is closed once its last call is done"
        assert gateway.open_channels == 1
        fake_aio_client.instances[1].release_all(_portrait_result())
        await fresh
        await gateway.close()
        return output

    output = asyncio.run(scenario())
    assert output.png == b"png" and output.face_box == (1, 2, 3, 4)


def test_a_call_cancelled_by_the_transport_answers_triton_unavailable(fake_aio_client):
    fake_aio_client.script = ["block", "block"]
    gateway = TritonGateway("triton:8001", timeout_s=5.0, retry_after_s=2)

    async def scenario():
        calls = [asyncio.create_task(gateway.infer_portrait(b"jpeg", REQUEST)) for _ in range(2)]
        await _until(lambda: fake_aio_client.instances and len(fake_aio_client.instances[0].pending) == 2)
        await fake_aio_client.instances[0].close()  # e.g. the channel torn down by grpc itself
        results = await asyncio.gather(*calls, return_exceptions=True)
        await gateway.close()
        return results

    for result in asyncio.run(scenario()):
        assert isinstance(result, GatewayError), result
        assert (result.status_code, result.error, result.headers["Retry-After"]) == (
            503,
            "triton_unavailable",
            "2",
        )


def test_cancelling_the_calling_task_still_cancels(fake_aio_client):
    fake_aio_client.script = ["block"]
    gateway = TritonGateway("triton:8001", timeout_s=5.0)

    async def scenario():
        call = asyncio.create_task(gateway.infer_portrait(b"jpeg", REQUEST))
        await _until(lambda: fake_aio_client.instances and fake_aio_client.instances[0].pending)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled()
        assert gateway.open_channels == 1, "the caller's own cancellation does not retire the channel"
        await gateway.close()

    asyncio.run(scenario())
