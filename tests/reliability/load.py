"""A bounded loopback load generator for the gateway (threads + httpx), shared by the load test
and the fault-injection tests.

Each client thread loops until its deadline (or ``stop`` is set): synchronous ``/api/v1/process``
requests (every fourth one enhanced) alternating with async job submissions whose completion the
client awaits before going on (closed loop, so the load is bounded), over a list of real photos. Every answer is classified by (status, error code); accepted async job ids are kept so
the caller can check that each one reaches ``completed`` or ``failed`` with a reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

TERMINAL = ("completed", "failed")


@dataclass
class LoadResult:
    """Counters of one run. ``outcomes``: "<status> <error or ok>" → count."""

    outcomes: Counter = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)
    transport_errors: Counter = field(default_factory=Counter)
    requests: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, response: httpx.Response) -> None:
        error = "ok"
        if "json" in response.headers.get("content-type", ""):
            body = response.json()
            if isinstance(body, dict) and body.get("error"):
                error = body["error"]
        with self.lock:
            self.requests += 1
            self.outcomes[f"{response.status_code} {error}"] += 1

    def statuses(self) -> Counter:
        counts: Counter = Counter()
        for key, value in self.outcomes.items():
            counts[int(key.split()[0])] += value
        return counts

    def undocumented_5xx(self, allowed: tuple[str, ...] = ("server_busy", "triton_unavailable")) -> dict:
        """5xx answers other than the documented 503 codes in ``allowed``."""
        return {
            key: value
            for key, value in self.outcomes.items()
            if int(key.split()[0]) >= 500 and not (key.startswith("503 ") and key.split()[1] in allowed)
        }


def run_load(
    base_url: str,
    photos: list[tuple[str, bytes]],
    clients: int,
    seconds: float,
    stop: threading.Event | None = None,
    result: LoadResult | None = None,
    job_timeout: float = 120.0,
) -> LoadResult:
    """Run ``clients`` threads for ``seconds`` (or until ``stop``); returns the counters."""
    result = result or LoadResult()
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=300) as http:
            turn = index
            while time.monotonic() < deadline and not stop.is_set():
                name, data = photos[turn % len(photos)]
                form = {"enhance_face": "true" if turn % 4 == 0 else "false", "width": "256", "height": "256"}
                files = {"file": (name, data, "application/octet-stream")}
                try:
                    if turn % 2 == 0:
                        response = http.post("/api/v1/process", files=files, data=form)
                    else:
                        response = http.post("/api/v1/jobs", files=files, data=form)
                        if response.status_code == 202:
                            job_id = response.json()["job_id"]
                            with result.lock:
                                result.job_ids.append(job_id)
                    result.record(response)
                    if turn % 2 == 1 and response.status_code == 202:
                        # A closed-loop client: wait for its job before the next request, so the
                        # load stays bounded (at most one outstanding job per client).
                        wait_for_jobs(base_url, [job_id], timeout=job_timeout, client=http)
                except httpx.HTTPError as error:
                    with result.lock:
                        result.transport_errors[type(error).__name__] += 1
                    time.sleep(0.2)
                turn += clients

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    return result


def wait_for_jobs(
    base_url: str, job_ids: list[str], timeout: float, client: httpx.Client | None = None
) -> dict[str, dict]:
    """Poll every job until it is completed or failed (or ``timeout``); returns id → last status."""
    last: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    with contextlib.nullcontext(client) if client else httpx.Client(base_url=base_url, timeout=60) as http:
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                try:
                    response = http.get(f"/api/v1/jobs/{job_id}")
                except httpx.HTTPError:
                    still.append(job_id)
                    continue
                last[job_id] = {"http_status": response.status_code, **response.json()}
                if response.status_code != 200 or last[job_id].get("status") not in TERMINAL:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(0.25)
    return last
