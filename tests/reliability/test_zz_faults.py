"""Fault injection: kill a Python stub, kill Triton, kill the gateway mid-write, fill the disk.

Named ``test_zz_*`` so it runs after the other reliability tests; every test that hurts the
session Triton leaves it running and ready (``restore_triton``) for whatever runs next.
Recovery figures (seconds to ready again) are written to ``.facecraft/reliability/faults.json``
and quoted in docs/reliability.md; nothing here asserts a duration beyond generous bounds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.reliability.load import LoadResult, run_load, wait_for_jobs
from tests.reliability.processes import GatewayProcess, python_stubs, stub_model

pytestmark = pytest.mark.integration

REPORT = Path(__file__).resolve().parents[2] / ".facecraft" / "reliability" / "faults.json"
RECOVERY_TIMEOUT_S = 240.0
# How long a dead stub gets to come back by itself before the test restarts Triton (the documented
# operator action; Triton 2.51's Python backend does not restart a killed stub by itself).
AUTO_RECOVERY_WAIT_S = 20.0
JOB_WAIT_S = 45.0
# The documented 503s of an outage; model_unavailable while the gateway replaces a dead stub's
# model (its unload and load: facecraft.gateway.triton.TritonGateway.recover_stub).
OUTAGE_ERRORS = ("triton_unavailable", "server_busy", "model_unavailable")


def record_figures(name: str, figures: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    data[name] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **figures}
    REPORT.write_text(json.dumps(data, indent=1))
    print(f"\n{name}:", json.dumps(figures))


def ready_status(base_url: str) -> int:
    try:
        return httpx.get(f"{base_url}/ready", timeout=60).status_code
    except httpx.HTTPError:
        return -1


@pytest.fixture
def restore_triton(triton_server):
    """After the test: Triton running and every model ready (restarted if needed)."""
    yield triton_server
    if not triton_server.is_running():
        triton_server.start()
    elif not triton_server.is_ready():
        triton_server.restart()


@pytest.fixture
def photos(astronaut_jpeg) -> list[tuple[str, bytes]]:
    return [("astronaut.jpg", astronaut_jpeg)]


def start_background_load(
    base_url, photos, clients=2
) -> tuple[threading.Thread, threading.Event, LoadResult]:
    stop, result = threading.Event(), LoadResult()
    thread = threading.Thread(
        target=run_load,
        args=(base_url, photos, clients, 600.0),
        kwargs={"stop": stop, "result": result, "job_timeout": 30.0},
        daemon=True,
    )
    thread.start()
    return thread, stop, result


def assert_jobs_terminal_with_reasons(jobs: dict[str, dict], job_ids: list[str], log: str = "") -> None:
    lost = [job_id for job_id in job_ids if jobs.get(job_id, {}).get("status") not in ("completed", "failed")]
    assert not lost, f"async jobs lost or stuck: {[(j, jobs.get(j)) for j in lost[:3]]}\n{log}"
    for job_id in job_ids:
        if jobs[job_id]["status"] == "failed":
            assert jobs[job_id].get("error") and jobs[job_id].get("error_message"), jobs[job_id]


# --------------------------------------------------------------------------- a Python stub dies


@pytest.fixture(scope="module")
def stub_kill(reliability_gateway, triton_server, astronaut_jpeg) -> dict:
    """SIGKILL the ``compose`` stub under load; record what clients and /ready saw until recovery."""
    base = reliability_gateway.url
    assert ready_status(base) == 200
    thread, stop, load = start_background_load(base, [("astronaut.jpg", astronaut_jpeg)])
    time.sleep(3.0)
    stubs = {pid: stub_model(args) for pid, args in python_stubs(triton_server.pid).items()}
    compose = [pid for pid, model in stubs.items() if model == "compose"]
    assert compose, f"no compose stub among {stubs}"
    os.kill(compose[0], signal.SIGKILL)
    killed_at = time.monotonic()
    seen: list[int] = []
    recovered_after = None
    restarted_triton = False
    while time.monotonic() - killed_at < RECOVERY_TIMEOUT_S:
        status = ready_status(base)
        seen.append(status)
        if status == 200 and (503 in seen or time.monotonic() - killed_at > 30):
            recovered_after = time.monotonic() - killed_at
            break
        if not restarted_triton and time.monotonic() - killed_at > AUTO_RECOVERY_WAIT_S:
            # Not back by itself: the documented operator action is restarting Triton.
            restarted_triton = True
            triton_server.restart()
        time.sleep(0.5)
    time.sleep(2.0)
    stop.set()
    thread.join(timeout=JOB_WAIT_S)
    jobs = wait_for_jobs(base, load.job_ids, timeout=JOB_WAIT_S)
    if not triton_server.is_ready():
        triton_server.restart()
    figures = {
        "ready_statuses_seen": sorted(set(seen)),
        "ready_probes": len(seen),
        "recovered_after_s": None if recovered_after is None else round(recovered_after, 1),
        "restarted_triton": restarted_triton,
        "stub_restarted": compose[0] not in python_stubs(triton_server.pid),
        "requests": load.requests,
        "outcomes": dict(load.outcomes),
        "transport_errors": dict(load.transport_errors),
        "async_jobs": len(load.job_ids),
        "async_failed": sum(1 for j in jobs.values() if j.get("status") == "failed"),
    }
    record_figures("kill_compose_stub", figures)
    return {
        "figures": figures,
        "load": load,
        "jobs": jobs,
        "seen": seen,
        "log": reliability_gateway.log_tail(60),
    }


def test_stub_kill_turns_ready_false_then_recovers(stub_kill, reliability_gateway):
    figures = stub_kill["figures"]
    assert 503 in stub_kill["seen"] or any(k.startswith("5") for k in figures["outcomes"]), (
        "a dead stub must be visible: /ready false or failed requests",
        figures,
    )
    assert figures["recovered_after_s"] is not None, figures
    assert ready_status(reliability_gateway.url) == 200


# Regression (found here, fixed in the gateway, 71856c6): closing the shared gRPC channel under
# in-flight calls raised CancelledError in them, killing the async worker and losing its job.
def test_stub_kill_loses_no_async_job(stub_kill):
    assert not stub_kill["load"].transport_errors, stub_kill["figures"]
    assert_jobs_terminal_with_reasons(stub_kill["jobs"], stub_kill["load"].job_ids, stub_kill["log"])


# Regression (found here, fixed in the gateway, 71856c6): a dead stub's Triton INTERNAL
# "Stub process ... is not healthy" used to reach clients as 500 internal_error.
def test_stub_kill_answers_only_documented_503(stub_kill):
    undocumented = stub_kill["load"].undocumented_5xx(OUTAGE_ERRORS)
    assert not undocumented, stub_kill["figures"]


# --------------------------------------------------------------------------- Triton dies


@pytest.fixture(scope="module")
def triton_kill(reliability_gateway, triton_server, astronaut_jpeg) -> dict:
    """Kill Triton under load, submit jobs during the outage, start it again; record everything."""
    triton = triton_server
    photos = [("astronaut.jpg", astronaut_jpeg)]
    base = reliability_gateway.url
    if not triton.is_ready():
        triton.restart()
    assert ready_status(base) == 200
    thread, stop, load = start_background_load(base, photos)
    time.sleep(3.0)
    stubs_before_kill = list(python_stubs(triton.pid))
    triton.kill()
    killed_at = time.monotonic()
    unready_after = None
    while time.monotonic() - killed_at < 60:
        if ready_status(base) == 503:
            unready_after = time.monotonic() - killed_at
            break
        time.sleep(0.25)
    # Jobs submitted while Triton is down are accepted and retried, not dropped.
    outage_jobs, outage_submits = [], []
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(2):
            response = http.post("/api/v1/jobs", files={"file": photos[0]}, data={"enhance_face": "false"})
            outage_submits.append(response.status_code)
            if response.status_code == 202:
                outage_jobs.append(response.json()["job_id"])
        during = http.post("/api/v1/process", files={"file": photos[0]}, data={"enhance_face": "false"})
    time.sleep(2.0)
    # SIGKILL gives Triton no chance to stop its Python stubs: count the orphans, then reap them.
    orphaned_stubs = [pid for pid in stubs_before_kill if Path(f"/proc/{pid}").exists()]
    for pid in orphaned_stubs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    restart_at = time.monotonic()
    triton.start()
    triton_ready_after = time.monotonic() - restart_at
    gateway_ready_after = None
    while time.monotonic() - restart_at < RECOVERY_TIMEOUT_S:
        if ready_status(base) == 200:
            gateway_ready_after = time.monotonic() - restart_at
            break
        time.sleep(0.5)
    time.sleep(2.0)
    stop.set()
    thread.join(timeout=JOB_WAIT_S)
    job_ids = load.job_ids + outage_jobs
    jobs = wait_for_jobs(base, job_ids, timeout=JOB_WAIT_S)
    with httpx.Client(base_url=base, timeout=300) as http:
        after = http.post("/api/v1/process", files={"file": photos[0]}, data={"enhance_face": "false"})
    figures = {
        "unready_after_kill_s": None if unready_after is None else round(unready_after, 2),
        "triton_ready_after_start_s": round(triton_ready_after, 1),
        "gateway_ready_after_start_s": None if gateway_ready_after is None else round(gateway_ready_after, 1),
        "process_during_outage": f"{during.status_code} {during.json().get('error')}",
        "process_after_recovery": after.status_code,
        "stubs_orphaned_by_sigkill": f"{len(orphaned_stubs)} of {len(stubs_before_kill)}",
        "requests": load.requests,
        "outcomes": dict(load.outcomes),
        "transport_errors": dict(load.transport_errors),
        "outage_jobs": {job_id: jobs.get(job_id, {}).get("status") for job_id in outage_jobs},
        "async_jobs": len(job_ids),
    }
    record_figures("kill_triton", figures)
    return {
        "figures": figures,
        "load": load,
        "jobs": jobs,
        "job_ids": job_ids,
        "during": during,
        "after": after,
        "outage_submits": outage_submits,
        "log": reliability_gateway.log_tail(60),
    }


def test_triton_kill_turns_ready_false_answers_503_and_recovers(triton_kill, triton_server):
    figures = triton_kill["figures"]
    assert figures["unready_after_kill_s"] is not None, f"/ready stayed 200 with Triton dead: {figures}"
    during = triton_kill["during"]
    assert (during.status_code, during.json().get("error")) == (503, "triton_unavailable"), figures
    assert during.headers.get("retry-after"), "503 must carry Retry-After"
    assert triton_kill["outage_submits"] == [202, 202], "jobs are accepted during an outage (retried later)"
    assert figures["gateway_ready_after_start_s"] is not None, figures
    after = triton_kill["after"]
    assert after.status_code == 200 and after.json()["success"], after.text
    assert triton_server.is_ready()


# Regression (same defect as above): no bare 500, no dropped connection, no job left running.
def test_triton_kill_answers_only_documented_errors_and_loses_no_job(triton_kill):
    load = triton_kill["load"]
    assert not load.undocumented_5xx(OUTAGE_ERRORS), triton_kill["figures"]
    assert not load.transport_errors, triton_kill["figures"]
    assert_jobs_terminal_with_reasons(triton_kill["jobs"], triton_kill["job_ids"], triton_kill["log"])


# --------------------------------------------------------------------------- the gateway dies


def complete_image(data: bytes, fmt: str) -> bool:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:
        return False
    return image.format == fmt


def test_gateway_killed_mid_write_never_serves_a_partial_file(triton_server, tmp_path, photos):
    gateway = GatewayProcess(tmp_path, triton_server.grpc_url, triton_server.repo)
    gateway.start()
    job_ids: list[str] = []
    kills = 0
    try:
        for _ in range(2):
            thread, stop, load = start_background_load(gateway.url, photos, clients=3)
            time.sleep(4.0)
            gateway.kill()  # SIGKILL while requests, job workers and file writes are in flight
            kills += 1
            stop.set()
            thread.join(timeout=120)
            job_ids += load.job_ids
            gateway.start()
        jobs = wait_for_jobs(gateway.url, job_ids, timeout=RECOVERY_TIMEOUT_S)
        served = 0
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            # Every job folder on disk, not only the ids the clients saw accepted.
            for folder in sorted((gateway.output_dir / "jobs").iterdir()):
                for fmt, pil_format in (("png", "PNG"), ("jpg", "JPEG")):
                    response = http.get(f"/api/v1/download/{folder.name}/{fmt}")
                    if response.status_code == 200:
                        served += 1
                        assert complete_image(response.content, pil_format), f"partial {fmt} served: {folder}"
                    else:
                        assert response.status_code in (404, 409), response.text
                        assert response.json()["error"], response.text
        figures = {"kills": kills, "async_jobs": len(job_ids), "downloads_served": served}
        # A gateway SIGKILLed mid-inference cancels its gRPC calls, which can crash Triton 2.51 itself
        # (its gRPC cancellation race, docs/reliability.md): recorded, not asserted; the session
        # fixture restarts a dead server before the next test.
        figures["triton_survived_the_kills"] = triton_server.is_running()
        figures["job_states"] = {
            s: sum(1 for j in jobs.values() if j.get("status") == s) for s in ("completed", "failed")
        }
        record_figures("kill_gateway", figures)
        assert_jobs_terminal_with_reasons(jobs, job_ids, gateway.log_tail(60))
        assert served > 0, figures
    finally:
        gateway.stop()


# --------------------------------------------------------------------------- the disk fills up


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 2 MB tmpfs (mounting needs root/CAP_SYS_ADMIN; skipped with the reason otherwise)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    completed = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if completed.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to simulate a full disk: {completed.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(path: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``path`` until about ``leave_bytes`` are free."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_disk_full_gives_507_and_no_partial_file(triton_server, tmp_path, tiny_filesystem, photos):
    gateway = GatewayProcess(tmp_path / "gw", triton_server.grpc_url, triton_server.repo)
    gateway.output_dir = tiny_filesystem / "outputs"
    gateway.env["FACECRAFT_OUTPUT_DIR"] = str(gateway.output_dir)
    gateway.start()
    try:
        filler = fill(tiny_filesystem, leave_bytes=6 * 1024)
        with httpx.Client(base_url=gateway.url, timeout=300) as http:
            form = {"enhance_face": "false"}
            full = http.post("/api/v1/process", files={"file": photos[0]}, data=form)
            submit = http.post("/api/v1/jobs", files={"file": photos[0]}, data=form)
            assert http.get("/health").status_code == 200
            leftovers = [
                p.relative_to(gateway.output_dir)
                for p in gateway.output_dir.rglob("*")
                if p.is_file() and (p.name.startswith(".tmp-") or p.suffix in (".png", ".jpg", ".bin"))
            ]
            filler.unlink()
            again = http.post("/api/v1/process", files={"file": photos[0]}, data=form)
        record_figures(
            "disk_full",
            {
                "process": f"{full.status_code} {full.json().get('error')}",
                "submit": f"{submit.status_code} {submit.json().get('error')}",
            },
        )
        assert (full.status_code, full.json()["error"]) == (507, "storage_error"), full.text
        assert "space" in full.json()["error_message"], full.text
        assert (submit.status_code, submit.json()["error"]) == (507, "storage_error"), submit.text
        assert not leftovers, f"partial or orphaned files after a full disk: {leftovers}"
        assert again.status_code == 200 and again.json()["success"], again.text
        download = httpx.get(gateway.url + again.json()["png_url"], timeout=60)
        assert complete_image(download.content, "PNG")
    finally:
        gateway.stop()
