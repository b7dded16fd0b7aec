"""The async job queue without Triton: restart recovery, retries, failure recording.

The queue's worker logic is exercised with a scripted stand-in for ``PortraitService.infer``;
the real Triton path is covered by tests/gateway/test_integration_*.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from facecraft.client.result import PortraitResult
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.jobs import JobQueue
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.service import PortraitService, ProcessOutcome, resolve_request
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobRecord, JobStorage
from facecraft.gateway.triton import TritonGateway

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def _queue(tmp_path, **overrides):
    overrides.setdefault("shutdown_grace_s", 0.5)  # a "block" step never ends: keep stop() short
    settings = GatewaySettings(output_dir=tmp_path, retry_after_s=1, **overrides)
    storage = JobStorage(tmp_path)
    storage.ensure_ready()
    metrics = GatewayMetrics()
    service = PortraitService(settings, TritonGateway("127.0.0.1:1", 1.0), storage, metrics)
    return JobQueue(settings, service, storage, metrics), storage, settings


def _save(storage, job_id, kind, status, with_input):
    now = time.time()
    record = JobRecord(job_id=job_id, kind=kind, status=status, created_at=now, updated_at=now)
    record.options = {
        "width": 64,
        "height": 64,
        "background": [1, 2, 3],
        "face_margin": 0.3,
        "oval_mask": True,
        "enhance": False,
        "fidelity": 0.7,
        "max_jpeg_kb": 64,
        "touch_up": False,
    }
    storage.save(record)
    if with_input:
        storage.write_file(job_id, "input.bin", PNG_1x1)


def test_recover_requeues_or_fails_interrupted_jobs(tmp_path):
    queue, storage, _ = _queue(tmp_path)
    _save(storage, "a" * 32, "async", "queued", with_input=True)
    _save(storage, "b" * 32, "async", "running", with_input=True)
    _save(storage, "c" * 32, "async", "running", with_input=False)
    _save(storage, "d" * 32, "async", "completed", with_input=False)
    counts = queue.recover()
    assert counts == {"requeued": 2, "failed": 1}
    assert queue.depth == 2
    for job_id in ("a" * 32, "b" * 32):
        record = storage.require(job_id)
        assert record.status == "queued"
        assert "restart" in record.note
    lost = storage.require("c" * 32)
    assert (lost.status, lost.error) == ("failed", "internal_error")
    assert "restart" in lost.error_message
    assert storage.require("d" * 32).status == "completed"


class _ScriptedInfer:
    """Returns the scripted outcomes (or raises the scripted errors, or blocks on "block") one call
    at a time."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self, image, request, wait_s=None):
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if step == "block":
            await asyncio.Event().wait()
        return step


async def _submit_and_wait(queue, storage, request, timeout_s=10.0):
    """Start the workers, submit one job, wait until it is completed or failed."""
    await queue.start()
    try:
        record = await queue.submit(PNG_1x1, request, "a.png")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = storage.load(record.job_id)
            if current is not None and current.status in ("completed", "failed"):
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"job stuck in {storage.load(record.job_id).status}")
    finally:
        await queue.stop()


def test_job_is_retried_while_triton_is_down_then_completes(tmp_path):
    queue, storage, settings = _queue(tmp_path)
    output = PortraitResult(b"png", b"jpg", (1, 2, 3, 4), 1, True, (64, 64))
    down = GatewayError(503, "triton_unavailable", "down", {"Retry-After": "1"})
    script = _ScriptedInfer(down, ProcessOutcome(output, 12.0))
    queue.service.infer = script

    record = asyncio.run(_submit_and_wait(queue, storage, resolve_request(settings, width=64, height=64)))
    assert record.status == "completed"
    assert record.attempts == 2
    assert script.calls == 2
    assert storage.read_file(record.job_id, "portrait.png") == b"png"
    assert not storage.file_path(record.job_id, "input.bin").exists()


@pytest.mark.parametrize(
    "step, code",
    [
        (ProcessOutcome(None, 5.0, "no_face_detected", "detect: no face"), "no_face_detected"),
        (GatewayError(400, "invalid_image", "decode: truncated"), "invalid_image"),
        (GatewayError(503, "triton_unavailable", "down"), "triton_unavailable"),
    ],
)
def test_job_failure_is_recorded_with_its_error(tmp_path, step, code):
    queue, storage, settings = _queue(tmp_path, job_max_attempts=1)
    queue.service.infer = _ScriptedInfer(step)

    record = asyncio.run(_submit_and_wait(queue, storage, resolve_request(settings)))
    assert (record.status, record.error) == ("failed", code)
    assert record.error_message


def test_submit_rejects_non_images_before_queueing(tmp_path):
    queue, storage, settings = _queue(tmp_path)

    async def scenario():
        await queue.submit(b"GIF89a" + b"\0" * 30, resolve_request(settings), "a.gif")

    with pytest.raises(GatewayError) as info:
        asyncio.run(scenario())
    assert info.value.error == "unsupported_media_type"
    assert list(storage.iter_records()) == []


OUTPUT = PortraitResult(b"png", b"jpg", (1, 2, 3, 4), 1, True, (64, 64))


async def _wait_terminal(storage, job_id, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = storage.load(job_id)
        if current is not None and current.status in ("completed", "failed"):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"job stuck in {storage.load(job_id).status}")


async def _two_jobs_one_worker(queue, storage, request):
    """Submit two jobs to a single worker; both must end terminal (the worker outlives the first)."""
    await queue.start()
    try:
        first = await queue.submit(PNG_1x1, request, "a.png")
        second = await queue.submit(PNG_1x1, request, "b.png")
        return await _wait_terminal(storage, first.job_id), await _wait_terminal(storage, second.job_id)
    finally:
        await queue.stop()


@pytest.mark.parametrize("crash", [asyncio.CancelledError(), RuntimeError("grpc went sideways")])
def test_worker_survives_a_job_whose_inference_raises_anything(tmp_path, crash):
    queue, storage, settings = _queue(tmp_path, job_workers=1, job_max_attempts=1)
    queue.service.infer = _ScriptedInfer(crash, ProcessOutcome(OUTPUT, 3.0))

    first, second = asyncio.run(_two_jobs_one_worker(queue, storage, resolve_request(settings)))
    assert first.status == "failed"
    assert first.error in ("triton_unavailable", "internal_error") and first.error_message
    assert second.status == "completed"


def test_a_job_whose_call_is_cancelled_under_it_is_retried(tmp_path):
    queue, storage, settings = _queue(tmp_path)
    script = _ScriptedInfer(asyncio.CancelledError(), ProcessOutcome(OUTPUT, 3.0))
    queue.service.infer = script

    record = asyncio.run(_submit_and_wait(queue, storage, resolve_request(settings)))
    assert (record.status, record.attempts, script.calls) == ("completed", 2, 2)


@pytest.mark.parametrize("reached_disk", [True, False])
@pytest.mark.parametrize("crash", [asyncio.CancelledError, RuntimeError])
def test_worker_survives_a_crash_outside_the_inference(tmp_path, crash, reached_disk):
    """Even a failure in the job bookkeeping itself ends the job failed, and the worker goes on."""
    queue, storage, settings = _queue(tmp_path, job_workers=1)
    queue.service.infer = _ScriptedInfer(ProcessOutcome(OUTPUT, 3.0), ProcessOutcome(OUTPUT, 3.0))
    transition = storage.transition
    crashed = []

    def transition_crashing_once_when_running(record, expected):
        if record.status == "running" and not crashed:
            crashed.append(record.job_id)
            if reached_disk:  # the job is running on disk, then the step blows up
                transition(record, expected)
            raise crash("the step crashed")
        return transition(record, expected)

    storage.transition = transition_crashing_once_when_running
    first, second = asyncio.run(_two_jobs_one_worker(queue, storage, resolve_request(settings)))
    assert (first.status, first.error) == ("failed", "internal_error")
    assert first.error_message
    assert second.status == "completed"


def test_stopping_the_queue_leaves_a_running_job_for_recovery(tmp_path):
    queue, storage, settings = _queue(tmp_path)
    queue.service.infer = _ScriptedInfer("block")

    async def scenario():
        await queue.start()
        record = await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
        deadline = time.monotonic() + 5
        while storage.require(record.job_id).status != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await queue.stop()
        return storage.require(record.job_id)

    record = asyncio.run(scenario())
    assert record.status == "running", "a shutdown must not fail the job: it is re-queued at the next start"


async def _stop_during_inference(queue, storage, settings, started: asyncio.Event, stop_timeout_s: float):
    """Start the workers, submit one job, stop the queue once its inference has ``started``;
    returns the job's record and the tasks still alive afterwards (besides this one)."""
    await queue.start()
    record = await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(queue.stop(), stop_timeout_s)
    # The inference call itself is shielded from the job's cancellation (runner.shielded: a gRPC
    # call cancelled mid-inference can crash Triton 2.51); the app's Triton channel close ends it.
    leftovers = [
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
        and task.get_coro().__qualname__ != type(queue.service.infer).__call__.__qualname__
    ]
    return storage.require(record.job_id), leftovers


class _SwallowsItsCancellation:
    """An inference that, when its task is cancelled, answers ``triton_unavailable`` instead of
    raising CancelledError: what Python 3.11's ``asyncio.wait_for`` does when the cancellation
    arrives as the gRPC call is failing (CPython gh-86296), seen as a gateway shutdown that hung."""

    def __init__(self):
        self.started = asyncio.Event()

    async def __call__(self, image, request, wait_s=None):
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise GatewayError(503, "triton_unavailable", "down", {"Retry-After": "30"}) from None


@pytest.mark.timeout(60)  # before the fix stop() hung forever, deaf to wait_for's own cancellation
def test_stop_finishes_when_a_worker_swallows_its_cancellation(tmp_path):
    """stop() must not wait forever on a worker whose cancellation was swallowed (it went on to
    schedule a retry and back to the queue), and must leave no retry timer behind."""
    queue, storage, settings = _queue(tmp_path, job_max_attempts=100)
    infer = _SwallowsItsCancellation()
    queue.service.infer = infer

    record, leftovers = asyncio.run(_stop_during_inference(queue, storage, settings, infer.started, 10))
    assert not leftovers, leftovers
    assert record.status in ("queued", "running"), "cut off by the shutdown: re-queued at the next start"


def test_cancel_and_wait_delivers_a_swallowed_cancellation_again():
    from facecraft.gateway.tasks import cancel_and_wait

    async def stubborn(swallow: int, seen: list):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                seen.append(asyncio.current_task().cancelling() > 0)  # the request is still counted
                if len(seen) > swallow:
                    raise

    async def scenario():
        seen: list = []
        task = asyncio.create_task(stubborn(2, seen))
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(lambda: [task]), 10)
        return task, seen

    task, seen = asyncio.run(scenario())
    assert task.cancelled() and seen == [True, True, True]


class _SlowInfer:
    """An inference that takes ``seconds`` and records whether it was cancelled."""

    def __init__(self, seconds: float, outcome):
        self.seconds, self.outcome = seconds, outcome
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, image, request, wait_s=None):
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.outcome


@pytest.mark.parametrize(("grace_s", "finishes"), [(10.0, True), (0.2, False)])
def test_stop_lets_a_running_job_finish_within_the_grace(tmp_path, grace_s, finishes):
    """A shutdown does not cancel an inference that ends within FACECRAFT_SHUTDOWN_GRACE_S (a
    cancelled gRPC call is what triggers Triton 2.51's cancellation crash); past it, the job is cut
    off and stays on disk for the next start."""
    queue, storage, settings = _queue(tmp_path, shutdown_grace_s=grace_s)
    output = PortraitResult(b"png", b"jpg", (1, 2, 3, 4), 1, True, (64, 64))
    infer = _SlowInfer(1.0, ProcessOutcome(output, 5.0))
    queue.service.infer = infer

    record, _ = asyncio.run(_stop_during_inference(queue, storage, settings, infer.started, 15))
    assert infer.cancelled is not finishes
    assert record.status == ("completed" if finishes else "running")


def test_full_queue_refuses_new_jobs_with_503_server_busy(tmp_path):
    """The backlog is bounded: past FACECRAFT_MAX_QUEUED_JOBS a submit is refused, nothing stored."""
    queue, storage, settings = _queue(tmp_path, max_queued_jobs=2)

    async def fill() -> list:
        accepted = [await queue.submit(PNG_1x1, resolve_request(settings), "a.png") for _ in range(2)]
        with pytest.raises(GatewayError) as refused:
            await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
        return accepted, refused.value

    accepted, error = asyncio.run(fill())  # no workers started: both jobs stay queued
    assert (error.status_code, error.error) == (503, "server_busy")
    assert error.headers == {"Retry-After": "1"}
    assert queue.depth == 2
    stored = {record.job_id for record in storage.iter_records()}
    assert stored == {record.job_id for record in accepted}


def test_a_job_deleted_while_its_inference_runs_is_not_brought_back(tmp_path):
    queue, storage, settings = _queue(tmp_path, job_workers=1)
    release = asyncio.Event()

    class _InferAfterRelease:
        calls = 0

        async def __call__(self, image, request, wait_s=None):
            self.calls += 1
            if self.calls == 1:
                await release.wait()
            return ProcessOutcome(OUTPUT, 3.0)

    queue.service.infer = _InferAfterRelease()

    async def scenario():
        await queue.start()
        try:
            deleted = await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
            deadline = time.monotonic() + 5
            while storage.require(deleted.job_id).status != "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert await asyncio.to_thread(storage.delete, deleted.job_id) is True
            release.set()
            after = await queue.submit(PNG_1x1, resolve_request(settings), "b.png")
            return deleted.job_id, await _wait_terminal(storage, after.job_id)
        finally:
            await queue.stop()

    deleted_id, after = asyncio.run(scenario())
    assert storage.load(deleted_id) is None
    assert not (storage.jobs_root / deleted_id).exists(), "the worker's late writes must not recreate it"
    assert after.status == "completed", "the worker goes on with the next job"


def test_delete_cancels_a_running_job_and_the_worker_goes_on(tmp_path):
    """DELETE of a running job: the job stops (its attempt is cancelled, the inference call left to
    end by itself), stays ``cancelled`` however the call ends, and the worker takes the next job."""
    queue, storage, settings = _queue(tmp_path, job_workers=1)
    release = asyncio.Event()
    infer_ended = asyncio.Event()

    class _InferUntilReleased:
        calls = 0

        async def __call__(self, image, request, wait_s=None):
            self.calls += 1
            if self.calls == 1:
                try:
                    await release.wait()
                finally:
                    infer_ended.set()
            return ProcessOutcome(OUTPUT, 3.0)

    queue.service.infer = _InferUntilReleased()

    async def scenario():
        await queue.start()
        try:
            running = await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
            deadline = time.monotonic() + 5
            while storage.require(running.job_id).status != "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert await queue.cancel_or_delete(running.job_id) == "cancelled"
            # the next job runs while the first call still hangs: the worker is free again
            after = await queue.submit(PNG_1x1, resolve_request(settings), "b.png")
            after = await _wait_terminal(storage, after.job_id)
            assert not infer_ended.is_set(), "the Triton call is not cancelled under the job"
            release.set()
            await asyncio.wait_for(infer_ended.wait(), 5)
            cancelled = storage.require(running.job_id)
            second = await queue.cancel_or_delete(running.job_id)
            return cancelled, after, second
        finally:
            await queue.stop()

    cancelled, after, second = asyncio.run(scenario())
    assert (cancelled.status, cancelled.error) == ("cancelled", "job_cancelled")
    assert not cancelled.files, "a cancelled job gets no result"
    assert after.status == "completed"
    assert second == "deleted"


def test_a_job_past_its_timeout_is_tried_again_then_failed(tmp_path):
    """The job type's per-attempt limit (FACECRAFT_JOB_TIMEOUT_S) holds on the local backend too:
    an attempt cut off is run again, and after FACECRAFT_JOB_MAX_ATTEMPTS the job fails with the
    reason; the worker goes on."""
    queue, storage, settings = _queue(tmp_path, job_workers=1, job_timeout_s=1, job_max_attempts=2)
    queue.service.infer = _ScriptedInfer("block", "block", ProcessOutcome(OUTPUT, 3.0))

    async def scenario():
        await queue.start()
        try:
            record = await queue.submit(PNG_1x1, resolve_request(settings), "a.png")
            timed_out = await _wait_terminal(storage, record.job_id, timeout_s=60)
            after = await queue.submit(PNG_1x1, resolve_request(settings), "b.png")
            return timed_out, await _wait_terminal(storage, after.job_id)
        finally:
            await queue.stop()

    timed_out, after = asyncio.run(scenario())
    assert (timed_out.status, timed_out.error, timed_out.attempts) == ("failed", "internal_error", 2)
    assert "interrupted in each of its 2 attempts" in timed_out.error_message
    assert queue.service.infer.calls == 3 and after.status == "completed"


def test_retry_waits_double_up_to_a_minute_and_outlast_a_triton_restart():
    from facecraft.gateway.runner import MAX_RETRY_DELAY_S, retry_delay_s
    from facecraft.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    waits = [retry_delay_s(settings, attempts) for attempts in range(1, settings.job_max_attempts)]
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0] and max(waits) == MAX_RETRY_DELAY_S
    # facecraft serve restarts a dead Triton in 10-30 s here: the defaults wait out well over a minute
    assert sum(waits) >= 75
