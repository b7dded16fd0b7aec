"""Triton going away and coming back under a running gateway (restarts the shared server).

Kept in its own module, after the other gateway integration tests; it always starts the server
again before returning.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def test_triton_down_then_recovered(gateway_client, triton_server, astronaut_jpeg):
    files = {"file": ("a.jpg", astronaut_jpeg, "image/jpeg")}
    options = {"enhance_face": "false", "width": "128", "height": "128"}
    assert gateway_client.post("/api/v1/process", data=options, files=files).json()["success"] is True
    triton_server.stop()
    try:
        down = gateway_client.post("/api/v1/process", data=options, files=files)
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "triton_unavailable"
        assert int(down.headers["Retry-After"]) >= 1
        ready = gateway_client.get("/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert gateway_client.get("/health").status_code == 200
        queued = gateway_client.post("/api/v1/jobs", data=options, files=files)
        assert queued.status_code == 202
    finally:
        triton_server.start()
    # The same gateway instance reconnects by itself.
    deadline = time.monotonic() + 60
    while True:
        response = gateway_client.post("/api/v1/process", data=options, files=files)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    assert gateway_client.get("/ready").status_code == 200
    # The job submitted during the outage was retried, not lost: it ends completed, or failed
    # with the outage as its recorded reason once its attempts ran out.
    job_id = queued.json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := gateway_client.get(f"/api/v1/jobs/{job_id}").json())["status"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "completed" or job["error"] == "triton_unavailable", job
    assert job["attempts"] >= 1
