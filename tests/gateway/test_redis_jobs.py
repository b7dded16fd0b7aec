"""The Redis job backend end to end: real ``redis-server``, real gateways (uvicorn subprocesses),
real ``facecraft worker`` processes, the session Triton.

Two gateways share one ``OUTPUT_DIR`` and one queue (module-scoped); each test starts the workers
it needs. Heartbeat and sweep are short here (3 s / 1 s) so that a dead worker's job is taken over
quickly; every wait is a poll with a generous deadline, never a timed assertion.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from facecraft.gateway.redis_jobs import QUEUE_NAME
from facecraft.runtime.ports import free_port
from tests.fixtures.gateway import GatewayServer, JobWorker, make_gateway_settings

WAIT_S = 180.0  # generous: 2 loaded cores, a worker taking over after a heartbeat timeout
FLEET_ENV = {
    "FACECRAFT_JOB_SWEEP_S": "1",
    "FACECRAFT_JOB_HEARTBEAT_S": "3",
    "FACECRAFT_JOB_WORKERS": "1",
    # an idle SAQ worker waits out the whole grace before it exits: keep the tests' stops short
    "FACECRAFT_SHUTDOWN_GRACE_S": "2",
}
SMALL = {"width": "128", "height": "128", "enhance_face": "false"}


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


class Fleet:
    """Two gateways over one Redis and one OUTPUT_DIR, and the workers a test starts."""

    def __init__(self, root: Path, redis_server, triton_server):
        self.root = root
        self.redis = redis_server
        self.triton = triton_server
        self.output_dir = root / "outputs"
        env = {
            "FACECRAFT_JOB_BACKEND": redis_server.url,
            "FACECRAFT_MODEL_REPOSITORY": str(triton_server.repo),
            **FLEET_ENV,
        }
        self.gateways = [
            GatewayServer(self.output_dir, triton_server.grpc_url, root / f"gateway-{index}.log", env=env)
            for index in range(2)
        ]
        self.workers: list[JobWorker] = []
        self.started_workers = 0

    def start_worker(self, **env: str) -> JobWorker:
        self.started_workers += 1
        worker = JobWorker(
            self.redis.url,
            self.output_dir,
            self.triton.grpc_url,
            self.root / f"worker-{self.started_workers}.log",
            env={**FLEET_ENV, **env},
        )
        self.workers.append(worker)
        worker.start()
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def submit(self, gateway: GatewayServer, photo: bytes, options: dict | None = None) -> str:
        response = httpx.post(
            f"{gateway.url}/api/v1/jobs",
            files={"file": ("a.jpg", photo, "image/jpeg")},
            data=options or SMALL,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def status(self, gateway: GatewayServer, job_id: str) -> dict:
        response = httpx.get(f"{gateway.url}/api/v1/jobs/{job_id}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, gateway: GatewayServer, job_id: str, *statuses: str) -> dict:
        return wait_until(
            lambda: (body := self.status(gateway, job_id))["status"] in statuses and body,
            f"job {job_id} to be {'/'.join(statuses)}",
        )

    def saq_status(self, job_id: str) -> str | None:
        import json

        with self.redis.client() as client:
            raw = client.get(f"saq:job:{QUEUE_NAME}:{job_id}")
        return None if raw is None else json.loads(raw)["status"]

    def job_files(self, job_id: str) -> list[str]:
        return sorted(path.name for path in (self.output_dir / "jobs" / job_id).iterdir())

    def log_tails(self) -> str:
        parts = [f"--- gateway {index}\n{g.log_tail()}" for index, g in enumerate(self.gateways)]
        parts += [f"--- worker {index}\n{w.log_tail()}" for index, w in enumerate(self.workers)]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis_server, triton_server) -> Iterator[Fleet]:
    with redis_server.client() as client:
        client.flushall()
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), redis_server, triton_server)
    for gateway in fleet.gateways:
        gateway.start()
    try:
        yield fleet
    finally:
        fleet.stop_workers()
        for gateway in fleet.gateways:
            gateway.stop()


@pytest.fixture
def workers(fleet) -> Iterator[Fleet]:
    """The fleet, its workers stopped after the test (whatever it started)."""
    try:
        yield fleet
    finally:
        fleet.stop_workers()


def triton_finished_requests(triton_server, model: str) -> int:
    """Requests of ``model`` Triton has answered so far (inference statistics: success + fail)."""
    stats = httpx.get(f"http://{triton_server.http_url}/v2/models/{model}/stats", timeout=10).json()
    inference = stats["model_stats"][0]["inference_stats"]
    return int(inference["success"]["count"]) + int(inference["fail"]["count"])


def triton_pending_requests(triton_server) -> float:
    """Requests Triton holds now, queued or executing (``nv_inference_pending_request_count``)."""
    page = httpx.get(triton_server.metrics_url, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("nv_inference_pending_request_count{")
    )


@pytest.mark.integration
def test_two_gateways_and_two_workers_share_one_queue(workers, astronaut_jpeg):
    fleet = workers
    metrics_port = free_port()
    names = {
        fleet.start_worker(FACECRAFT_WORKER_METRICS_PORT=str(metrics_port)).name,
        fleet.start_worker().name,
    }
    first, second = fleet.gateways
    jobs = [fleet.submit(fleet.gateways[index % 2], astronaut_jpeg) for index in range(4)]
    for index, job_id in enumerate(jobs):
        other = fleet.gateways[(index + 1) % 2]  # the gateway that did not accept it reports it
        body = fleet.wait_status(other, job_id, "completed", "failed")
        assert body["status"] == "completed", (body, fleet.log_tails())
        assert body["attempts"] == 1
        record = (fleet.output_dir / "jobs" / job_id / "job.json").read_text()
        assert any(name in record for name in names), "run by one of the fleet's workers"
        for gateway in (first, second):
            png = httpx.get(f"{gateway.url}{body['png_url']}", timeout=30)
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    # a processors-chain job runs on the workers too (the same runner)
    chain = fleet.submit(first, astronaut_jpeg, {"processors": "face_analyser"})
    body = fleet.wait_status(second, chain, "completed", "failed")
    assert body["status"] == "completed", (body, fleet.log_tails())
    report = httpx.get(f"{second.url}/api/v1/jobs/{chain}/result", timeout=30)
    assert report.status_code == 200 and report.json()["face_count"] == 1
    metrics = httpx.get(f"{first.url}/metrics", timeout=30).text
    registered = next(
        line for line in metrics.splitlines() if line.startswith("facecraft_gateway_job_workers ")
    )
    assert float(registered.split()[1]) >= 2, "both workers are registered with the queue"
    assert 'facecraft_gateway_job_states{state="queued"} 0.0' in metrics
    # the worker's own endpoint: the durations of the jobs it ran
    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
    ran = next(
        line
        for line in worker_metrics.splitlines()
        if line.startswith('facecraft_gateway_job_duration_seconds_count{job_type="portrait"}')
    )
    assert float(ran.split()[1]) >= 1


@pytest.mark.integration
def test_a_video_job_runs_on_a_worker_as_the_video_job_type(workers, tmp_path):
    """One short video job: submitted to one gateway, run by a worker with the video job type's
    limits, its progress and MP4 result reported by the other gateway."""
    from fractions import Fraction

    from facecraft.pipeline.video import probe_video
    from tests.fixtures.videos import video_packets, write_clip

    fleet = workers
    worker = fleet.start_worker()
    first, second = fleet.gateways
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=6, fps=6)
    response = httpx.post(
        f"{first.url}/api/v1/jobs",
        files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")},
        data={"processors": "face_enhancer"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    body = fleet.wait_status(second, job_id, "completed", "failed")
    assert body["status"] == "completed", (body, fleet.log_tails())
    assert (
        body["media"] == "video" and body["progress"]["frames_done"] == body["progress"]["frames_total"] == 6
    )
    import json

    with fleet.redis.client() as client:
        queued = json.loads(client.get(f"saq:job:{QUEUE_NAME}:{job_id}"))
    assert (queued["timeout"], queued["heartbeat"]) == (6 * 3600, 120)  # FACECRAFT_VIDEO_JOB_* defaults
    assert worker.name in (fleet.output_dir / "jobs" / job_id / "job.json").read_text()
    result = httpx.get(f"{second.url}/api/v1/jobs/{job_id}/result", timeout=30)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(result.content)
    info = probe_video(out)
    assert (info.frames, info.fps, info.width, info.height) == (6, Fraction(6), 128, 96)
    assert info.duration_s == probe_video(clip).duration_s
    assert video_packets(out, "audio") == video_packets(clip, "audio")


@pytest.mark.integration
def test_a_worker_killed_mid_job_leaves_it_to_the_other_which_completes_it_once(
    workers, triton_server, astronaut_jpeg
):
    """The worker is frozen (SIGSTOP) while it runs the job, then SIGKILLed once Triton holds no
    request of it (killing a process mid-call can crash Triton 2.51, docs/reliability.md): the job
    was taken but never finished. The second worker takes it over after the heartbeat."""
    fleet = workers
    doomed = fleet.start_worker()
    gateway = fleet.gateways[0]
    options = {"width": "256", "height": "256", "enhance_face": "true"}
    for _ in range(3):  # the frozen worker may (rarely) have finished the job before SIGSTOP
        answered = triton_finished_requests(triton_server, "portrait")  # only doomed calls Triton
        job_id = fleet.submit(gateway, astronaut_jpeg, options)
        body = fleet.wait_status(gateway, job_id, "running", "completed", "failed")
        if body["status"] == "running":
            doomed.pause()
            if fleet.status(gateway, job_id)["status"] == "running":
                break
            doomed.resume()
        fleet.wait_status(gateway, job_id, "completed", "failed")
    else:
        pytest.fail("the worker finished every job before it could be frozen mid-job")
    # Killing a client whose call Triton is still executing can crash Triton 2.51 (its gRPC
    # cancellation race): wait until the frozen worker's portrait call has been answered. Queued
    # requests alone (pending) are not enough: an executing one is not counted there. A call the
    # worker had not sent yet when frozen is never answered: after a generous wait with nothing
    # queued, that is the case and killing is safe.
    deadline = time.monotonic() + 120
    while triton_finished_requests(triton_server, "portrait") == answered:
        if time.monotonic() > deadline and triton_pending_requests(triton_server) == 0:
            break
        time.sleep(0.1)
    doomed_name = doomed.name
    doomed.kill()
    survivor = fleet.start_worker()
    body = fleet.wait_status(fleet.gateways[1], job_id, "completed", "failed")
    assert body["status"] == "completed", (body, fleet.log_tails())
    record = (fleet.output_dir / "jobs" / job_id / "job.json").read_text()
    assert survivor.name in record and doomed_name not in record
    assert body["attempts"] == 2, "taken once by each worker, completed once"
    assert fleet.job_files(job_id) == ["job.json", "portrait.jpg", "portrait.png"], "one result, input gone"
    assert wait_until(lambda: fleet.saq_status(job_id) == "complete", "the queue's job to be complete")


@pytest.mark.integration
def test_a_job_accepted_by_a_gateway_that_dies_is_reported_by_another(workers, astronaut_jpeg):
    fleet = workers
    doomed, other = fleet.gateways
    job_id = fleet.submit(doomed, astronaut_jpeg)  # no worker yet: it stays queued
    doomed.kill()
    try:
        assert fleet.status(other, job_id)["status"] == "queued"
        fleet.start_worker()
        body = fleet.wait_status(other, job_id, "completed", "failed")
        assert body["status"] == "completed", (body, fleet.log_tails())
    finally:
        doomed.start()
    assert fleet.status(doomed, job_id)["status"] == "completed", "the restarted gateway reports it too"


@pytest.mark.integration
def test_a_redis_crash_loses_no_accepted_job(workers, astronaut_jpeg):
    """Accepted jobs survive a SIGKILLed Redis (AOF, appendfsync always); while it is down a submit
    is refused with 503 ``queue_unavailable`` and nothing is stored."""
    fleet = workers
    accepted = [fleet.submit(fleet.gateways[index % 2], astronaut_jpeg) for index in range(3)]
    stored_before = set(path.name for path in (fleet.output_dir / "jobs").iterdir())
    fleet.redis.kill()
    try:
        refused = httpx.post(
            f"{fleet.gateways[0].url}/api/v1/jobs",
            files={"file": ("a.jpg", astronaut_jpeg, "image/jpeg")},
            data=SMALL,
            timeout=120,
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "queue_unavailable"
        assert refused.headers["Retry-After"] == "1"
        assert set(path.name for path in (fleet.output_dir / "jobs").iterdir()) == stored_before
    finally:
        fleet.redis.start()
    with fleet.redis.client() as client:
        persisted = {
            key.decode().rsplit(":", 1)[-1] for key in client.lrange(f"saq:{QUEUE_NAME}:queued", 0, -1)
        }
    assert set(accepted) <= persisted, "the queue itself came back from the AOF"
    fleet.start_worker()
    for job_id in accepted:
        body = fleet.wait_status(fleet.gateways[1], job_id, "completed", "failed")
        assert body["status"] == "completed", (body, fleet.log_tails())
        assert body["attempts"] == 1


@contextlib.contextmanager
def triton_paused(triton_server) -> Iterator[None]:
    """SIGSTOP the Triton server, SIGCONT on exit: calls in flight wait, none is cancelled."""
    os.kill(triton_server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(triton_server.pid, signal.SIGCONT)


@pytest.mark.integration
def test_delete_cancels_a_running_job_on_a_worker(workers, triton_server, astronaut_jpeg):
    """DELETE of a job running on a worker: the worker stops it (SAQ abort, polled every second)
    while its Triton call hangs (Triton paused); the call then ends and its result is dropped."""
    fleet = workers
    fleet.start_worker()
    gateway, other = fleet.gateways
    options = {"width": "256", "height": "256", "enhance_face": "true"}
    for _ in range(3):  # the job may (rarely) have finished before Triton was paused
        job_id = fleet.submit(gateway, astronaut_jpeg, options)
        body = fleet.wait_status(gateway, job_id, "running", "completed", "failed")
        if body["status"] != "running":
            continue
        with triton_paused(triton_server):
            if fleet.status(gateway, job_id)["status"] != "running":
                continue
            deleted = httpx.delete(f"{other.url}/api/v1/jobs/{job_id}", timeout=30)
            assert deleted.json() == {"success": True, "job_id": job_id, "deleted": False, "cancelled": True}
            ended = wait_until(
                lambda job_id=job_id: (
                    (state := fleet.saq_status(job_id)) in ("aborted", "complete") and state
                ),
                "the worker to stop the job",
            )
        assert fleet.wait_status(gateway, job_id, "cancelled")["error"] == "job_cancelled"
        if ended == "aborted":
            break
        # it finished in the instant before the pause: still cancelled, and without a result
        assert wait_until(
            lambda job_id=job_id: fleet.job_files(job_id) == ["job.json"], "its outputs to be dropped"
        )
    else:
        pytest.fail("every job finished before it could be cancelled mid-inference")
    assert fleet.job_files(job_id) == ["job.json"], "no result, input removed"
    result = httpx.get(f"{gateway.url}/api/v1/jobs/{job_id}/result", timeout=30)
    assert (result.status_code, result.json()["error"]) == (409, "job_cancelled")
    # the worker goes on with the next job; the dropped call never completes the cancelled one
    after = fleet.submit(gateway, astronaut_jpeg)
    assert fleet.wait_status(other, after, "completed", "failed")["status"] == "completed"
    assert fleet.status(gateway, job_id)["status"] == "cancelled"
    assert fleet.job_files(job_id) == ["job.json"]
    assert httpx.delete(f"{gateway.url}/api/v1/jobs/{job_id}", timeout=30).json()["deleted"] is True
    assert httpx.get(f"{gateway.url}/api/v1/jobs/{job_id}", timeout=30).status_code == 404


def _redis_app(tmp_path, redis_url: str, **overrides):
    from fastapi.testclient import TestClient

    from facecraft.gateway.app import create_app

    settings = make_gateway_settings(tmp_path / "outputs", "127.0.0.1:1", job_backend=redis_url, **overrides)
    return TestClient(create_app(settings))


PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def test_the_queue_ui_is_mounted_behind_the_api_key(tmp_path, redis_url):
    with _redis_app(tmp_path, redis_url, api_key="s3cret") as client:
        refused = client.get("/api/v1/queue-ui/api/queues")
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")
        shown = client.get("/api/v1/queue-ui/api/queues", headers={"X-API-Key": "s3cret"})
        assert shown.status_code == 200
        assert [queue["name"] for queue in shown.json()["queues"]] == [QUEUE_NAME]


def test_a_job_is_queued_in_redis_and_a_full_backlog_is_refused(tmp_path, redis_url):
    """Submit = record on disk + one SAQ job keyed by the job id; past FACECRAFT_MAX_QUEUED_JOBS
    503 server_busy; the gauges read the queue."""
    import json

    import redis

    with _redis_app(tmp_path, redis_url, max_queued_jobs=2) as client:
        ids = [
            client.post("/api/v1/jobs", files={"file": ("a.png", PNG_1x1, "image/png")}).json()["job_id"]
            for _ in range(2)
        ]
        refused = client.post("/api/v1/jobs", files={"file": ("a.png", PNG_1x1, "image/png")})
        assert (refused.status_code, refused.json()["error"]) == (503, "server_busy")
        assert refused.headers["Retry-After"] == "1"
        metrics = client.get("/metrics").text
        assert "facecraft_gateway_job_queue_depth 2.0" in metrics
    with redis.Redis.from_url(redis_url) as broker:
        for job_id in ids:
            job = json.loads(broker.get(f"saq:job:{QUEUE_NAME}:{job_id}"))
            assert (job["status"], job["kwargs"]) == ("queued", {"job_id": job_id})
            assert job["heartbeat"] == 30 and job["timeout"] == 600, "the portrait job type's limits"
    assert sorted(path.name for path in (tmp_path / "outputs" / "jobs").iterdir()) == sorted(ids)


def test_a_submit_while_the_broker_is_down_is_503_queue_unavailable_and_stores_nothing(tmp_path):
    with _redis_app(tmp_path, f"redis://127.0.0.1:{free_port()}/0") as client:
        refused = client.post("/api/v1/jobs", files={"file": ("a.png", PNG_1x1, "image/png")})
        assert (refused.status_code, refused.json()["error"]) == (503, "queue_unavailable")
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/health").status_code == 200, "the gateway itself stays up"
    assert not any((tmp_path / "outputs" / "jobs").iterdir())


def test_delete_cancels_a_job_even_while_the_broker_is_down(tmp_path):
    """The cancellation is the job record's: with Redis unreachable the DELETE still cancels (the
    worker, if one runs the job, finishes it and the runner drops its result)."""
    from tests.fixtures.redis import RedisServer

    broker = RedisServer(tmp_path / "redis")
    broker.start()
    try:
        with _redis_app(tmp_path, broker.url) as client:
            job_id = client.post("/api/v1/jobs", files={"file": ("a.png", PNG_1x1, "image/png")}).json()[
                "job_id"
            ]
            broker.kill()
            deleted = client.delete(f"/api/v1/jobs/{job_id}")
            assert deleted.json() == {"success": True, "job_id": job_id, "deleted": False, "cancelled": True}
            assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
    finally:
        broker.kill()
