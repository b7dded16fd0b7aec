"""Option resolution and validation (400 invalid_option), result summaries."""

from __future__ import annotations

import asyncio
import math

import pytest

from facecraft.client.result import PortraitResult
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.security import JOB_ID_PATTERN
from facecraft.gateway.service import PortraitService, new_job_id, resolve_request, result_summary
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobStorage
from facecraft.gateway.triton import TritonGateway


@pytest.fixture
def settings(tmp_path):
    return GatewaySettings(output_dir=tmp_path, default_background=(10, 20, 30), default_width=500)


def test_defaults_come_from_settings(settings):
    request = resolve_request(settings)
    assert (request.width, request.height) == (500, 648)
    assert request.background == (10, 20, 30)
    assert (request.face_margin, request.oval_mask, request.enhance) == (0.3, True, True)
    assert (request.fidelity, request.max_jpeg_kb, request.touch_up) == (0.7, 200, False)
    assert request.model_name == "portrait"


def test_explicit_values_override(settings):
    request = resolve_request(
        settings,
        width=64,
        height=4096,
        background=(None, 255, 0),
        face_margin=2.0,
        use_oval_mask=False,
        enhance_face=False,
        enhance_fidelity=0.0,
        max_jpeg_kb=8,
        touch_up=True,
    )
    assert request.background == (10, 255, 0)
    assert request.model_name == "portrait_basic"
    assert (request.width, request.height, request.max_jpeg_kb, request.touch_up) == (64, 4096, 8, True)


@pytest.mark.parametrize(
    "field, value, name",
    [
        ("width", 63, "width"),
        ("height", 4097, "height"),
        ("face_margin", -0.1, "face_margin"),
        ("face_margin", math.nan, "face_margin"),
        ("enhance_fidelity", 1.01, "enhance_fidelity"),
        ("max_jpeg_kb", 7, "max_jpeg_kb"),
        ("background", (0, 256, 0), "background_g"),
    ],
)
def test_out_of_range_options_are_invalid_option(settings, field, value, name):
    with pytest.raises(GatewayError) as info:
        resolve_request(settings, **{field: value})
    assert (info.value.status_code, info.value.error) == (400, "invalid_option")
    assert name in info.value.message


def test_job_ids_are_unique_uuid_hex():
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(JOB_ID_PATTERN.fullmatch(job_id) for job_id in ids)


def test_result_summary_fields():
    output = PortraitResult(b"p" * 10, b"j" * 7, (1, 2, 3, 4), 2, True, (640, 480))
    summary = result_summary(output, "portrait")
    assert summary["face_detected"] is True
    assert summary["face_count"] == 2
    assert summary["face_position"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    assert summary["output_size"] == {"width": 640, "height": 480}
    assert summary["file_size_bytes"] == 7
    assert summary["png_size_bytes"] == 10


def test_saturated_slots_answer_503_server_busy(tmp_path):
    """With every inference slot taken beyond QUEUE_WAIT_S, the next request gets 503 + Retry-After."""
    settings = GatewaySettings(output_dir=tmp_path, max_concurrent_jobs=1, queue_wait_s=0.05, retry_after_s=4)
    triton = TritonGateway("127.0.0.1:1", 1.0)
    release = asyncio.Event()
    output = PortraitResult(b"png", b"jpg", (0, 0, 1, 1), 1, True, (64, 64))

    async def slow_inference(image, request):
        await release.wait()
        return output

    triton.infer_portrait = slow_inference
    service = PortraitService(settings, triton, JobStorage(tmp_path), GatewayMetrics())
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077")

    async def scenario():
        first = asyncio.create_task(service.infer(png, resolve_request(settings)))
        await asyncio.sleep(0.01)
        with pytest.raises(GatewayError) as info:
            await service.infer(png, resolve_request(settings))
        release.set()
        return info.value, await first

    busy, first = asyncio.run(scenario())
    assert (busy.status_code, busy.error, busy.headers["Retry-After"]) == (503, "server_busy", "4")
    assert first.output is output
