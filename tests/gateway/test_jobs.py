"""The async job queue without Triton: restart recovery, retries, failure recording.

The queue's worker logic is exercised with a scripted stand-in for ``PortraitService.infer``;
the real Triton path is covered by tests/gateway/test_integration_*.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.jobs import JobQueue
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.service import PortraitService, ProcessOutcome, resolve_request
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobRecord, JobStorage
from facecraft.gateway.triton import PortraitOutput, TritonGateway

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def _queue(tmp_path, **overrides):
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
    """Returns the scripted outcomes (or raises the scripted errors) one call at a time."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self, image, request, wait_s=None):
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
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
    output = PortraitOutput(b"png", b"jpg", (1, 2, 3, 4), 1, True, (64, 64))
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
