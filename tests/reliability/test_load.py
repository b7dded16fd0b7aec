"""Bounded loopback load test: N clients x T seconds against the real gateway + Triton.

Promises checked (docs/reliability.md): no 5xx other than the documented 503 backpressure
(``server_busy``), every accepted async job ends ``completed`` or ``failed`` with a reason, every
served download is a complete image, and no file-descriptor or memory growth across the run
(gateway and Triton, read from /proc; generous bounds — the figures are reported, not timed).

Short by default (``DEFAULT_LOAD_SECONDS``); ``make load-test`` runs ``--load-seconds 120``.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.fixtures.images import SHARED_FACES, SINGLE_FACE_PHOTOS
from tests.reliability.load import run_load, wait_for_jobs
from tests.reliability.processes import python_stubs, read_processes, stub_model

pytestmark = [pytest.mark.integration, pytest.mark.load]

CLIENTS = 4
REPORT_DIR = Path(__file__).resolve().parents[2] / ".facecraft" / "reliability"
# Generous bounds: growth must be small compared with what a leak per request would give.
MAX_FD_GROWTH = 40
MAX_RSS_GROWTH_BYTES = 300 * 1024 * 1024


def load_photos(astronaut_jpeg: bytes) -> list[tuple[str, bytes]]:
    photos = [("astronaut.jpg", astronaut_jpeg)]
    for name in SINGLE_FACE_PHOTOS:
        path = SHARED_FACES / name
        if path.is_file():
            photos.append((name, path.read_bytes()))
    return photos


def tracked_pids(gateway, triton_server) -> dict[str, int]:
    pids = {"gateway": gateway.pid, "triton": triton_server.pid}
    for pid, args in python_stubs(triton_server.pid).items():
        pids[f"stub {stub_model(args)} {pid}"] = pid
    return pids


def assert_nothing_lost(runs, job_ids: list[str], jobs: dict, figures: dict) -> None:
    """The promises of every load run: answers, no undocumented 5xx, no transport error, every
    accepted async job finished (completed, or failed with its reason)."""
    assert runs[-1].requests >= CLIENTS, figures
    statuses = runs[-1].statuses()
    assert statuses[200] + statuses[202] > 0, figures
    for run in runs:
        assert not run.undocumented_5xx(allowed=("server_busy",)), figures
        assert not run.transport_errors, figures
    unfinished = [
        job_id for job_id in job_ids if jobs.get(job_id, {}).get("status") not in ("completed", "failed")
    ]
    assert not unfinished, f"async jobs lost or stuck: {unfinished[:5]} ({len(unfinished)})"
    for job in jobs.values():
        if job["status"] == "failed":
            assert job.get("error") and job.get("error_message"), job


def test_bounded_load_serves_everything_without_leaks(
    reliability_gateway, triton_server, astronaut_jpeg, load_seconds
):
    photos = load_photos(astronaut_jpeg)
    base = reliability_gateway.url
    # Warm-up: first requests load lazily initialised state in every process.
    with httpx.Client(base_url=base, timeout=300) as http:
        for enhance in ("false", "true"):
            warm = http.post(
                "/api/v1/process", files={"file": photos[0]}, data={"enhance_face": enhance, "width": "256"}
            )
            assert warm.status_code == 200 and warm.json()["success"], warm.text
    pids = tracked_pids(reliability_gateway, triton_server)
    baseline = read_processes(pids)
    # Phase 1 brings every process to its steady state (ONNX Runtime arenas grow with the largest
    # batch seen); phase 2 is measured against it, so growth in phase 2 means a leak.
    warm = run_load(base, photos, clients=CLIENTS, seconds=max(5.0, load_seconds / 3))
    before = read_processes(pids)
    result = run_load(base, photos, clients=CLIENTS, seconds=load_seconds)
    all_job_ids = warm.job_ids + result.job_ids
    jobs = wait_for_jobs(base, all_job_ids, timeout=120.0)
    time.sleep(1.0)  # let sockets of finished requests close
    after = read_processes(pids)

    # Every served download is a complete image.
    completed = [job for job in jobs.values() if job.get("status") == "completed"]
    with httpx.Client(base_url=base, timeout=60) as http:
        for job in completed[:20]:
            response = http.get(f"/api/v1/jobs/{job['job_id']}/result", params={"format": "png"})
            assert response.status_code == 200
            Image.open(io.BytesIO(response.content)).load()

    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "clients": CLIENTS,
        "seconds": round(result.seconds, 1),
        "requests": result.requests,
        "outcomes": dict(result.outcomes),
        "transport_errors": dict(result.transport_errors),
        "async_jobs": len(all_job_ids),
        "async_completed": len(completed),
        "async_failed": sum(1 for job in jobs.values() if job.get("status") == "failed"),
        "warm_up_requests": warm.requests,
        "fds_baseline": baseline.fds,
        "fds_before": before.fds,
        "fds_after": after.fds,
        "rss_mb_baseline": {k: round(v / 2**20, 1) for k, v in baseline.rss.items()},
        "rss_mb_before": {k: round(v / 2**20, 1) for k, v in before.rss.items()},
        "rss_mb_after": {k: round(v / 2**20, 1) for k, v in after.rss.items()},
    }
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / f"load-{int(load_seconds)}s.json").write_text(json.dumps(figures, indent=1))
    print("\nload figures:", json.dumps(figures))

    assert_nothing_lost([warm, result], all_job_ids, jobs, figures)
    for label in pids:
        assert after.fds[label] - before.fds[label] <= MAX_FD_GROWTH, (label, figures)
        assert after.rss[label] - before.rss[label] <= MAX_RSS_GROWTH_BYTES, (label, figures)
    assert reliability_gateway.alive() and triton_server.is_running()


def test_bounded_load_on_the_redis_job_backend_loses_no_job(
    triton_server, redis_url, tmp_path, astronaut_jpeg, load_seconds
):
    """The same load against a gateway on the Redis job backend, its async jobs run by a
    ``facecraft worker``: 0 lost jobs, 0 undocumented 5xx (the figures go to load-redis-*.json)."""
    from tests.fixtures.gateway import JobWorker
    from tests.reliability.processes import GatewayProcess

    photos = load_photos(astronaut_jpeg)
    gateway = GatewayProcess(
        tmp_path / "gateway", triton_server.grpc_url, triton_server.repo, job_backend=redis_url, job_sweep_s=1
    )
    gateway.start()
    worker = JobWorker(redis_url, gateway.output_dir, triton_server.grpc_url, tmp_path / "worker.log")
    try:
        worker.start()
        result = run_load(gateway.url, photos, clients=CLIENTS, seconds=max(5.0, load_seconds / 2))
        jobs = wait_for_jobs(gateway.url, result.job_ids, timeout=180.0)
        completed = [job for job in jobs.values() if job.get("status") == "completed"]
        figures = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "backend": "redis",
            "clients": CLIENTS,
            "seconds": round(result.seconds, 1),
            "requests": result.requests,
            "outcomes": dict(result.outcomes),
            "transport_errors": dict(result.transport_errors),
            "async_jobs": len(result.job_ids),
            "async_completed": len(completed),
            "async_failed": sum(1 for job in jobs.values() if job.get("status") == "failed"),
        }
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / f"load-redis-{int(load_seconds)}s.json").write_text(json.dumps(figures, indent=1))
        print("\nload figures (redis):", json.dumps(figures))
        assert result.job_ids, ("no async job was accepted", figures)
        assert_nothing_lost([result], result.job_ids, jobs, figures)
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            for job in completed[:5]:
                response = http.get(f"/api/v1/jobs/{job['job_id']}/result", params={"format": "png"})
                assert response.status_code == 200
                Image.open(io.BytesIO(response.content)).load()
    finally:
        worker.stop()
        gateway.stop()
    assert triton_server.is_running()
