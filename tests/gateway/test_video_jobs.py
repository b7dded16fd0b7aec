"""facecraft.gateway.video_jobs against the real embedded Triton: a chain over every frame."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction

import numpy as np
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
from tests.fixtures.videos import decode_frames, video_packets, write_clip
from tests.gateway.test_integration import wait_for_job
from tests.gateway.test_redis_jobs import wait_until

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


# --- video jobs through POST /api/v1/jobs (local backend, the session Triton) -------------------


def _submit(client, path, data, content_type="video/mp4"):
    return client.post(
        "/api/v1/jobs", files={"file": (path.name, path.read_bytes(), content_type)}, data=data
    )


def test_a_face_enhancer_video_job_keeps_frames_fps_duration_size_and_audio(gateway_client, clip, tmp_path):
    submitted = _submit(gateway_client, clip, {"processors": "face_enhancer"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    job = wait_for_job(gateway_client, job_id)
    assert job["status"] == "completed", (job.get("error"), job.get("error_message"))
    assert job["media"] == "video" and job["processors"] == ["face_enhancer"]
    assert job["progress"]["frames_done"] == job["progress"]["frames_total"] == 6
    assert job["progress"]["eta_s"] == 0 and job["progress"]["fps"] > 0
    assert (job["result"]["frames"], job["result"]["audio"]) == (6, "copied")
    result = gateway_client.get(submitted.json()["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(result.content)
    before, after = probe_video(clip), probe_video(out)
    assert (after.frames, after.fps, after.width, after.height) == (6, Fraction(6), 128, 96)
    assert after.duration_s == before.duration_s
    assert video_packets(out, "audio") == video_packets(clip, "audio")
    assert not (gateway_client.app.state.settings.output_dir / "jobs" / job_id / "input.bin").exists()


def test_a_background_remover_video_job_gives_vp9_with_alpha(gateway_client, clip, tmp_path):
    submitted = _submit(gateway_client, clip, {"processors": "background_remover", "video_format": "webm"})
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(gateway_client, submitted.json()["job_id"])
    assert job["status"] == "completed", (job.get("error"), job.get("error_message"))
    result = gateway_client.get(submitted.json()["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "video/webm"
    out = tmp_path / "cut.webm"
    out.write_bytes(result.content)
    info = probe_video(out)
    assert (info.codec, info.frames, info.fps, info.width, info.height) == ("vp9", 6, Fraction(6), 128, 96)
    alpha = np.stack([frame[..., 3] for frame in decode_frames(out, decoder="libvpx-vp9", fmt="rgba")])
    assert alpha.shape[0] == 6 and alpha.min() < 128 < alpha.max()  # cut out: part kept, part clear


def test_a_face_analyser_video_job_gives_json_lines(gateway_client, clip):
    submitted = _submit(gateway_client, clip, {"processors": "face_analyser"})
    job = wait_for_job(gateway_client, submitted.json()["job_id"])
    assert job["status"] == "completed", (job.get("error"), job.get("error_message"))
    result = gateway_client.get(submitted.json()["result_url"])
    assert result.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in result.text.splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert [line["face_count"] for line in lines] == [1] * 6


def test_a_video_job_without_audio_says_so_in_its_result(gateway_client, tmp_path):
    silent = tmp_path / "silent.mp4"
    write_clip(silent, frames=3, fps=3, width=64, height=48, audio=None)
    submitted = _submit(gateway_client, silent, {"processors": "face_analyser"})
    job = wait_for_job(gateway_client, submitted.json()["job_id"])
    assert job["status"] == "completed", (job.get("error"), job.get("error_message"))
    assert (job["result"]["frames"], job["result"]["audio"]) == (3, "none")


def test_delete_stops_a_running_video_job_and_leaves_no_output(gateway_client, tmp_path):
    long_clip = tmp_path / "long.mp4"
    write_clip(long_clip, frames=240, fps=24, width=64, height=48, audio=None)
    submitted = _submit(gateway_client, long_clip, {"processors": "face_enhancer"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert gateway_client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["frames_total"] == 240

    def running_progress():
        body = gateway_client.get(f"/api/v1/jobs/{job_id}").json()
        assert body["status"] in ("queued", "running"), body
        return body["status"] == "running" and body.get("progress", {}).get("frames_done", 0) > 0 and body

    running = wait_until(running_progress, "the job to report progress")
    progress = running["progress"]
    assert 0 < progress["frames_done"] < progress["frames_total"] == 240
    assert progress["fps"] > 0 and progress["eta_s"] > 0
    deleted = gateway_client.delete(f"/api/v1/jobs/{job_id}")
    assert deleted.status_code == 200 and deleted.json()["cancelled"] is True
    folder = gateway_client.app.state.settings.output_dir / "jobs" / job_id
    # the attempt ends (its temporary output removed) without running to the last frame
    wait_until(lambda: not list(folder.glob(".result*")), "the partial output to be removed")
    wait_until(lambda: not gateway_client.app.state.jobs._running, "the attempt to end")
    body = gateway_client.get(f"/api/v1/jobs/{job_id}").json()
    assert (body["status"], body["error"]) == ("cancelled", "job_cancelled")
    assert body["progress"]["frames_done"] < 240
    assert sorted(path.name for path in folder.iterdir()) == ["job.json"]
    result = gateway_client.get(f"/api/v1/jobs/{job_id}/result")
    assert (result.status_code, result.json()["error"]) == (409, "job_cancelled")


@pytest.mark.parametrize(
    ("make", "data", "status", "error"),
    [
        ("truncated", {"processors": "face_enhancer"}, 400, "corrupt_video"),
        ("audio_only", {"processors": "face_enhancer"}, 400, "no_video_stream"),
        ("mpeg4v2", {"processors": "face_enhancer"}, 415, "unsupported_video_codec"),
        ("clip", {"processors": "portrait"}, 400, "invalid_option"),
        ("clip", {}, 415, "unsupported_media_type"),
        ("clip", {"processors": "face_enhancer", "video_format": "avi"}, 400, "invalid_option"),
    ],
)
def test_bad_video_jobs_are_refused_at_submit(gateway_client, clip, tmp_path, make, data, status, error):
    path = clip
    if make == "truncated":
        path = tmp_path / "cut.mp4"
        path.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    elif make == "audio_only":
        path = tmp_path / "sound.webm"
        write_clip(
            path, format="webm", codec="libvpx-vp9", audio="libopus", audio_rate=48000, frames=6, fps=6
        )
        path = _strip_video(path, tmp_path / "sound-only.webm")
    elif make == "mpeg4v2":
        path = tmp_path / "mpeg2.mkv"
        write_clip(path, format="matroska", codec="mpeg2video", frames=6, fps=6, audio=None)
    response = _submit(gateway_client, path, data)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    if make == "clip" and data.get("processors", "portrait") == "portrait":
        assert "one image at a time" in response.json()["error_message"]
    jobs = gateway_client.app.state.settings.output_dir / "jobs"
    assert not [entry for entry in jobs.iterdir() if not entry.name.startswith(".")], "nothing queued"


def _strip_video(source, destination):
    """``source`` with its video stream dropped (its audio packets copied)."""
    import av

    with av.open(str(source)) as inp, av.open(str(destination), "w", format="webm") as out:
        audio = inp.streams.audio[0]
        stream = out.add_stream_from_template(audio)
        for packet in inp.demux(audio):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return destination


def test_the_jobs_route_takes_videos_up_to_the_video_cap_and_images_up_to_the_image_cap(
    triton_server, tmp_path, clip
):
    from fastapi.testclient import TestClient

    from facecraft.gateway.app import create_app
    from tests.fixtures.gateway import make_gateway_settings

    size = clip.stat().st_size
    settings = make_gateway_settings(
        tmp_path / "capped",
        triton_server.grpc_url,
        max_upload_mb=size / 2 / 1048576,
        video_max_mb=size * 4 / 1048576,
    )
    big_png = b"\x89PNG\r\n\x1a\n" + bytes(size)
    with TestClient(create_app(settings)) as client:
        image = client.post("/api/v1/jobs", files={"file": ("a.png", big_png, "image/png")})
        assert (image.status_code, image.json()["error"]) == (413, "file_too_large")
        process = client.post("/api/v1/process", files={"file": ("a.png", big_png, "image/png")})
        assert (process.status_code, process.json()["error"]) == (413, "file_too_large")
        video = _submit(client, clip, {"processors": "face_analyser"})
        assert video.status_code == 202, video.text
        assert wait_for_job(client, video.json()["job_id"])["status"] == "completed"
    settings = make_gateway_settings(
        tmp_path / "small", triton_server.grpc_url, video_max_mb=size / 2 / 1048576
    )
    with TestClient(create_app(settings)) as client:
        response = _submit(client, clip, {"processors": "face_analyser"})
        assert (response.status_code, response.json()["error"]) == (413, "video_too_large")
