"""``POST /api/v1/jobs`` with face_swapper: the `source` file beside `file`, on images and videos,
on the local and the Redis backend, against the real embedded Triton with the swap models
exported (tiny, untrained: tests/fixtures/exported.py). Validation without the models:
tests/gateway/test_routes_processors.py."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facecraft.gateway.app import create_app
from facecraft.pipeline.video import probe_video
from tests.fixtures.exported import model_counts
from tests.fixtures.gateway import JobWorker, make_gateway_settings
from tests.fixtures.videos import decode_frames, video_packets, write_clip
from tests.gateway.test_integration import wait_for_job
from tests.gateway.test_redis_jobs import wait_until

pytestmark = pytest.mark.integration

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
SOURCE = "dlib__Tom_Cruise_avp_2014_4.jpg"
TARGET = "fr__two_people.jpg"


def photo(name: str) -> bytes:
    path = FACES / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path.read_bytes()


def swap_job(client, target: bytes, source: bytes, processors: str = "face_swapper", **data):
    files = {"file": ("target.jpg", target, "application/octet-stream"), "source": ("source.jpg", source)}
    response = client.post("/api/v1/jobs", files=files, data={"processors": processors, **data})
    assert response.status_code == 202, response.text
    return response.json()


def sync(client, name: str, files: dict, **data) -> bytes:
    response = client.post(f"/api/v1/processors/{name}", files=files, data=data)
    assert response.status_code == 200, response.text
    return response.content


def result_of(client, submitted: dict) -> bytes:
    job = wait_for_job(client, submitted["job_id"])
    assert job["status"] == "completed", (job.get("error"), job.get("error_message"))
    response = client.get(submitted["result_url"])
    assert response.status_code == 200
    return response.content


@pytest.fixture
def swap_client(exported_models, gateway_client):
    return gateway_client


def test_an_image_swap_job_and_chain_give_the_sync_routes_results(swap_client):
    source, target = photo(SOURCE), photo(TARGET)
    direct = sync(swap_client, "face_swapper", {"source": ("s.jpg", source), "target": ("t.jpg", target)})
    assert result_of(swap_client, swap_job(swap_client, target, source)) == direct
    # a chain: the swap, then the background cut out of its output (PNG between steps), as two sync
    # calls (untrained swaps leave no detectable face, so no face processor follows it here)
    cut = sync(swap_client, "background_remover", {"file": ("swapped.png", direct)}, background="#00ff00")
    chained = swap_job(
        swap_client,
        target,
        source,
        "face_swapper,background_remover",
        processor_options='{"background_remover": {"background": "#00ff00"}}',
    )
    assert result_of(swap_client, chained) == cut
    job_dir = swap_client.app.state.settings.output_dir / "jobs" / chained["job_id"]
    wait_until(  # the inputs go right after the completed status is written
        lambda: sorted(p.name for p in job_dir.iterdir()) == ["job.json", "result.png"], "inputs removed"
    )


def test_a_swap_job_accepted_before_a_restart_runs_after_it_with_its_source(exported_models, tmp_path):
    """Accepted while Triton is unreachable (so it waits, queued, with input.bin and source.bin on
    disk), the gateway stops; a new gateway on the same OUTPUT_DIR runs it: the sync result."""
    source, target = photo(SOURCE), photo(TARGET)
    output_dir = tmp_path / "outputs"
    down = make_gateway_settings(output_dir, "127.0.0.1:1", job_max_attempts=50, retry_after_s=30)
    with TestClient(create_app(down)) as client:
        submitted = swap_job(client, target, source)
    job_dir = output_dir / "jobs" / submitted["job_id"]
    assert {"input.bin", "source.bin"} <= {p.name for p in job_dir.iterdir()}
    assert (job_dir / "source.bin").read_bytes() == source
    up = make_gateway_settings(output_dir, exported_models.grpc_url, model_repository=exported_models.repo)
    with TestClient(create_app(up)) as client:
        files = {"source": ("s.jpg", source), "target": ("t.jpg", target)}
        assert result_of(client, submitted) == sync(client, "face_swapper", files)


def test_a_swap_job_on_the_redis_backend_runs_on_a_worker_with_its_source(
    exported_models, redis_server, tmp_path
):
    """Queued in Redis by a gateway, run by a `facecraft worker` process that reads the source
    from the shared OUTPUT_DIR: the sync route's result."""
    source, target = photo(SOURCE), photo(TARGET)
    output_dir = tmp_path / "outputs"
    with redis_server.client() as redis_client:
        redis_client.flushall()
    settings = make_gateway_settings(
        output_dir,
        exported_models.grpc_url,
        job_backend=redis_server.url,
        model_repository=exported_models.repo,
    )
    worker = JobWorker(redis_server.url, output_dir, exported_models.grpc_url, tmp_path / "worker.log")
    with TestClient(create_app(settings)) as client:
        submitted = swap_job(client, target, source)
        worker.start()
        name = worker.name
        try:
            swapped = result_of(client, submitted)
        finally:
            worker.stop()
        files = {"source": ("s.jpg", source), "target": ("t.jpg", target)}
        assert swapped == sync(client, "face_swapper", files)
        record = (output_dir / "jobs" / submitted["job_id"] / "job.json").read_text()
        assert name in record


# --- face_swapper on a video: the source identity once per job ------------------------------------

FACELESS = (1, 4)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = write_clip(path, frames=6, fps=6, faceless=FACELESS)
    return path, frames


def test_a_video_swap_job_embeds_the_source_once_and_swaps_every_frame_with_a_face(
    exported_models, swap_client, clip, tmp_path
):
    path, frames = clip
    server = exported_models
    arcface_before = model_counts(server, "arcface_w600k_r50")
    swapper_before = model_counts(server, "inswapper_128")
    submitted = swap_job(swap_client, path.read_bytes(), photo(SOURCE))
    out = tmp_path / "out.mp4"
    out.write_bytes(result_of(swap_client, submitted))
    arcface = model_counts(server, "arcface_w600k_r50")[1] - arcface_before[1]
    swapped_faces = model_counts(server, "inswapper_128")[1] - swapper_before[1]
    assert arcface == 1  # the source identity, once for the whole job
    assert swapped_faces == len(frames) - len(FACELESS)  # one face in each frame that has one
    before, after = probe_video(path), probe_video(out)
    assert (after.frames, after.fps, after.width, after.height) == (6, Fraction(6), 128, 96)
    assert after.duration_s == before.duration_s
    assert video_packets(out, "audio") == video_packets(path, "audio")
    inputs, outputs = decode_frames(path), decode_frames(out)
    for index, (original, result) in enumerate(zip(inputs, outputs, strict=True)):
        difference = np.abs(result.astype(np.int16) - original.astype(np.int16)).mean()
        if index in FACELESS:
            assert difference < 2, f"frame {index} without a face changed by {difference}"
        else:
            assert difference > 4, f"frame {index} with a face was not swapped ({difference})"


def test_a_video_swap_job_with_a_faceless_source_fails_before_any_frame(exported_models, swap_client, clip):
    path, _ = clip
    swapper_before = model_counts(exported_models, "inswapper_128")
    submitted = swap_job(swap_client, path.read_bytes(), photo("dlib__giraffe.jpg"))
    job = wait_for_job(swap_client, submitted["job_id"])
    assert (job["status"], job["error"]) == ("failed", "no_source_face"), job
    assert job["progress"]["frames_done"] == 0  # failed before the first frame was decoded
    assert model_counts(exported_models, "inswapper_128") == swapper_before


def test_the_gateway_client_submits_a_video_swap_job_with_its_source(exported_models, gateway_server, clip):
    """`AsyncGatewayClient.submit_job(..., source=...)` against a gateway process: the job's video;
    and `run_processor("face_swapper", {SOURCE, TARGET})` sends both files to the sync route."""
    import asyncio

    from facecraft.client.errors import NoSourceFace
    from facecraft.client.gateway_client import AsyncGatewayClient

    path, _ = clip

    async def scenario():
        async with AsyncGatewayClient(gateway_server.url) as client:
            submitted = await client.submit_job(path.read_bytes(), ["face_swapper"], source=photo(SOURCE))
            seen = []
            await client.wait_for_job(submitted["job_id"], poll_s=0.2, on_status=seen.append)
            video = await client.job_result(submitted["job_id"])
            images = {"SOURCE": photo(SOURCE), "TARGET": photo(TARGET)}
            swapped = await client.run_processor("face_swapper", images, "t.jpg")
            faceless = await client.submit_job(
                path.read_bytes(), "face_swapper", source=photo("dlib__giraffe.jpg")
            )
            with pytest.raises(NoSourceFace):
                await client.wait_for_job(faceless["job_id"], poll_s=0.2)
            return seen, video, swapped

    seen, video, swapped = asyncio.run(asyncio.wait_for(scenario(), 600))
    assert seen[-1]["status"] == "completed" and seen[-1]["progress"]["frames_done"] == 6
    assert video[4:8] == b"ftyp"  # an MP4
    assert swapped.face_count == 2 and swapped.media_type == "image/png"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("source", "status", "error"),
    [
        (b"\xff\xd8\xff" + bytes(3 * 1024 * 1024), 413, "file_too_large"),
        (_png_header(40000, 40000), 400, "image_too_large"),
    ],
)
def test_a_job_source_gets_the_upload_size_and_pixel_caps(tmp_path, source, status, error):
    """The same helpers as every upload (read_upload_capped, validate_image_bytes): nothing stored."""
    settings = make_gateway_settings(tmp_path / "outputs", "127.0.0.1:1", max_upload_mb=2)
    with TestClient(create_app(settings)) as client:
        files = {"file": ("t.jpg", photo(TARGET)), "source": ("s.png", source)}
        response = client.post("/api/v1/jobs", files=files, data={"processors": "face_swapper"})
        assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert not any((tmp_path / "outputs" / "jobs").iterdir())
