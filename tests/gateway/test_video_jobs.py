"""facecraft.gateway.video_jobs against the real embedded Triton: a chain over every frame."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction

import pytest

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.processors_service import resolve_chain_options
from facecraft.gateway.service import PortraitService
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobStorage
from facecraft.gateway.triton import TritonGateway
from facecraft.gateway.video_jobs import run_video_chain
from facecraft.pipeline.video import probe_video
from tests.fixtures.videos import video_packets, write_clip

pytestmark = pytest.mark.integration


def _run(triton_server, tmp_path, chain, source, destination, reports=None):
    settings = GatewaySettings(
        output_dir=tmp_path / "jobs", triton_url=triton_server.grpc_url, video_max_in_flight=3
    )

    async def scenario():
        triton = TritonGateway(settings.triton_url, settings.triton_timeout_s)
        service = PortraitService(settings, triton, JobStorage(settings.output_dir), GatewayMetrics())
        try:
            options = resolve_chain_options(chain, None)
            return await run_video_chain(
                service,
                chain,
                options,
                source,
                destination,
                progress=None if reports is None else reports.append,
            )
        finally:
            await triton.close()

    return asyncio.run(asyncio.wait_for(scenario(), 600))


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, frames=6, fps=6)
    return path


def test_a_chain_runs_over_every_frame_keeping_fps_duration_and_audio(triton_server, clip, tmp_path):
    out = tmp_path / "out.mp4"
    reports = []
    result = _run(triton_server, tmp_path, ("face_enhancer", "background_remover"), clip, out, reports)
    before, after = probe_video(clip), probe_video(out)
    assert (after.frames, after.fps, after.width, after.height) == (6, Fraction(6), 128, 96)
    assert after.duration_s == before.duration_s
    assert result.audio == "copied" and video_packets(out, "audio") == video_packets(clip, "audio")
    assert [r.frames_done for r in reports] == list(range(1, 7)) and reports[-1].frames_total == 6


def test_a_chain_ending_with_the_analyser_writes_json_lines(triton_server, clip, tmp_path):
    out = tmp_path / "faces.jsonl"
    _run(triton_server, tmp_path, ("face_analyser",), clip, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert [line["face_count"] for line in lines] == [1] * 6  # the composited face, in every frame


def test_the_portrait_in_a_video_chain_is_refused(triton_server, clip, tmp_path):
    with pytest.raises(GatewayError) as info:
        _run(triton_server, tmp_path, ("portrait",), clip, tmp_path / "out.mp4")
    assert (info.value.status_code, info.value.error) == (400, "invalid_option")
    assert not (tmp_path / "out.mp4").exists()
