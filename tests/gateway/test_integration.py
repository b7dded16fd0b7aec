"""The gateway against the REAL embedded Triton (``triton_server`` fixture, tiny untrained models).

Every endpoint's success path with real photos, the no-face and bad-input paths, batches with
working per-file downloads, the async job lifecycle across a gateway restart, API key on, and the
real uvicorn server.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facecraft.gateway.app import create_app
from tests.fixtures.gateway import make_gateway_settings

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 180.0


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def upload(name: str, data: bytes, content_type: str = "image/jpeg"):
    return {"file": (name, data, content_type)}


def wait_for_job(client, job_id: str, timeout_s: float = JOB_TIMEOUT_S, headers=None) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("completed", "failed"):
            body["seen"] = seen
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s (states {seen})")


def test_process_astronaut_end_to_end(gateway_client, gateway_settings, astronaut_jpeg):
    response = gateway_client.post(
        "/api/v1/process",
        data={
            "width": "320",
            "height": "400",
            "background_r": "10",
            "background_g": "200",
            "background_b": "30",
            "face_margin": "0.4",
            "use_oval_mask": "true",
            "enhance_face": "true",
            "enhance_fidelity": "0.5",
            "max_jpeg_kb": "100",
            "return_base64": "true",
        },
        files=upload("astronaut.jpg", astronaut_jpeg),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert len(body["job_id"]) == 32
    assert body["processing_time_ms"] > 0
    result = body["result"]
    assert result["face_detected"] is True
    assert result["face_count"] >= 1
    assert result["model"] == "portrait"
    face = result["face_position"]
    # dlib finds the astronaut's face around (179, 83) 87x87 in the 512x512 photo.
    assert 140 < face["x"] < 220 and 40 < face["y"] < 130 and 50 < face["width"] < 140
    assert result["output_size"] == {"width": 320, "height": 400}
    # The tiny test models carry seeded random weights: every result must say so.
    assert body["weights"] == "untrained"
    assert "UNTRAINED" in body["warning"]

    png = gateway_client.get(body["png_url"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.headers["x-facecraft-weights"] == "untrained"
    png_image = open_image(png.content)
    assert (png_image.format, png_image.mode, png_image.size) == ("PNG", "RGBA", (320, 400))
    jpg = gateway_client.get(body["jpg_url"])
    assert jpg.headers["content-type"] == "image/jpeg"
    jpg_image = open_image(jpg.content)
    assert (jpg_image.format, jpg_image.size) == ("JPEG", (320, 400))
    assert result["file_size_bytes"] == len(jpg.content)
    assert len(jpg.content) <= 100 * 1024 or result["jpeg_cap_met"] is False
    assert base64.b64decode(body["png_base64"]) == png.content
    assert base64.b64decode(body["jpg_base64"]) == jpg.content

    # Stored atomically: job metadata + the two outputs, no temporary leftovers.
    job_dir = gateway_settings.output_dir / "jobs" / body["job_id"]
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json", "portrait.jpg", "portrait.png"]
    record = json.loads((job_dir / "job.json").read_text())
    assert (record["status"], record["kind"], record["filename"]) == ("completed", "process", "astronaut.jpg")
    status = gateway_client.get(f"/api/v1/jobs/{body['job_id']}").json()
    assert status["status"] == "completed" and status["png_url"] == body["png_url"]


def test_process_real_photos_without_enhancement(gateway_client, single_face_photo_bytes):
    for name, data in single_face_photo_bytes.items():
        response = gateway_client.post(
            "/api/v1/process", data={"enhance_face": "false"}, files=upload(name, data)
        )
        body = response.json()
        assert response.status_code == 200, (name, response.text)
        assert body["success"] is True, (name, body)
        assert body["result"]["model"] == "portrait_basic"
        assert body["result"]["output_size"] == {"width": 648, "height": 648}
        assert "png_base64" not in body
        image = open_image(gateway_client.get(body["png_url"]).content)
        assert image.size == (648, 648) and image.mode == "RGBA"


def test_png_upload_is_accepted(gateway_client, astronaut_png):
    response = gateway_client.post(
        "/api/v1/process",
        data={"width": "128", "height": "128"},
        files=upload("a.png", astronaut_png, "image/png"),
    )
    assert response.json()["success"] is True


def test_no_face_is_200_with_success_false(gateway_client, gateway_settings, no_face_jpeg):
    response = gateway_client.post("/api/v1/process", files=upload("gradient.jpg", no_face_jpeg))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "no_face_detected"
    assert body["error_message"]
    assert body["result"]["face_detected"] is False
    assert "png_url" not in body
    assert not (gateway_settings.output_dir / "jobs" / body["job_id"]).exists()


def test_no_face_real_photo(gateway_client, faces_dir):
    data = (faces_dir / "dlib__giraffe.jpg").read_bytes()
    body = gateway_client.post("/api/v1/process", files=upload("giraffe.jpg", data)).json()
    assert (body["success"], body["error"]) == (False, "no_face_detected")


def test_corrupt_image_is_400_invalid_image(gateway_client, astronaut_jpeg):
    truncated = astronaut_jpeg[: len(astronaut_jpeg) // 8]
    response = gateway_client.post("/api/v1/process", files=upload("cut.jpg", truncated))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_image"


def test_quick_returns_png(gateway_client, astronaut_jpeg, no_face_jpeg):
    response = gateway_client.post(
        "/api/v1/process/quick", data={"size": "256"}, files=upload("a.jpg", astronaut_jpeg)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert int(response.headers["x-face-count"]) >= 1
    image = open_image(response.content)
    assert (image.size, image.mode) == ((256, 256), "RGBA")
    no_face = gateway_client.post("/api/v1/process/quick", files=upload("g.jpg", no_face_jpeg))
    assert no_face.status_code == 400
    assert no_face.json()["error"] == "no_face_detected"


def test_batch_mixed_files_with_working_download_urls(
    gateway_client, astronaut_jpeg, astronaut_png, no_face_jpeg
):
    files = [
        ("files", ("astronaut.jpg", astronaut_jpeg, "image/jpeg")),
        ("files", ("../../evil name.png", astronaut_png, "image/png")),
        ("files", ("gradient.jpg", no_face_jpeg, "image/jpeg")),
        ("files", ("notes.jpg", b"just some text, not an image", "image/jpeg")),
        ("files", ("cut.jpg", astronaut_jpeg[:300], "image/jpeg")),
    ]
    response = gateway_client.post(
        "/api/v1/process/batch",
        data={"width": "200", "height": "240", "return_base64": "true", "enhance_face": "false"},
        files=files,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["successful"], body["failed"]) == (5, 2, 3)
    results = body["results"]
    assert [item["filename"] for item in results] == [
        "astronaut.jpg",
        "evil name.png",
        "gradient.jpg",
        "notes.jpg",
        "cut.jpg",
    ]
    assert [item["success"] for item in results] == [True, True, False, False, False]
    assert [item.get("error") for item in results[2:]] == [
        "no_face_detected",
        "unsupported_media_type",
        "invalid_image",
    ]
    for item in results[:2]:
        png = gateway_client.get(item["download_url"])
        assert png.status_code == 200
        assert open_image(png.content).size == (200, 240)
        assert base64.b64decode(item["png_base64"]) == png.content
        jpg = gateway_client.get(item["jpg_url"])
        assert open_image(jpg.content).format == "JPEG"
    failed_url = f"/api/v1/download/{body['job_id']}/2/png"
    assert gateway_client.get(failed_url).status_code == 404
    assert gateway_client.get(f"/api/v1/jobs/{body['job_id']}").json()["kind"] == "batch"
    assert gateway_client.delete(f"/api/v1/jobs/{body['job_id']}").status_code == 200
    assert gateway_client.get(results[0]["download_url"]).status_code == 404


def test_delete_job_removes_downloads(gateway_client, astronaut_jpeg):
    body = gateway_client.post(
        "/api/v1/process", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
    ).json()
    assert gateway_client.get(body["png_url"]).status_code == 200
    deleted = gateway_client.delete(f"/api/v1/jobs/{body['job_id']}")
    assert deleted.json() == {"success": True, "job_id": body["job_id"], "deleted": True}
    assert gateway_client.get(body["png_url"]).json()["error"] == "not_found"


def test_async_job_lifecycle_and_gateway_restart(gateway_settings, astronaut_jpeg, no_face_jpeg):
    with TestClient(create_app(gateway_settings)) as client:
        submitted = client.post(
            "/api/v1/jobs", data={"width": "160", "height": "160"}, files=upload("a.jpg", astronaut_jpeg)
        )
        assert submitted.status_code == 202
        job = submitted.json()
        assert job["status"] == "queued"
        done = wait_for_job(client, job["job_id"])
        assert done["status"] == "completed", done
        assert done["seen"][-1] == "completed"
        assert done["result"]["face_detected"] is True
        png = client.get(f"/api/v1/jobs/{job['job_id']}/result?format=png")
        assert open_image(png.content).size == (160, 160)
        jpg = client.get(f"/api/v1/jobs/{job['job_id']}/result", params={"format": "jpg"})
        assert open_image(jpg.content).format == "JPEG"

        failing = client.post("/api/v1/jobs", files=upload("g.jpg", no_face_jpeg)).json()
        failed = wait_for_job(client, failing["job_id"])
        assert (failed["status"], failed["error"]) == ("failed", "no_face_detected")
        result = client.get(f"/api/v1/jobs/{failing['job_id']}/result")
        assert (result.status_code, result.json()["error"]) == (409, "job_failed")

    # A new gateway instance over the same OUTPUT_DIR: finished results are all still there.
    with TestClient(create_app(gateway_settings)) as client:
        again = client.get(f"/api/v1/jobs/{job['job_id']}/result?format=png")
        assert again.status_code == 200 and again.content == png.content
        assert client.get(f"/api/v1/jobs/{failing['job_id']}").json()["error"] == "no_face_detected"


def test_job_queued_when_gateway_stops_completes_after_restart(gateway_settings, astronaut_jpeg):
    # No workers in the first instance: the job stays queued when the gateway goes away.
    stopped = make_gateway_settings(
        gateway_settings.output_dir, gateway_settings.triton_url, job_workers=1, job_max_attempts=1
    )
    app = create_app(stopped)
    with TestClient(app) as client:
        app.state.jobs._workers[0].cancel()
        job_id = client.post(
            "/api/v1/jobs", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
        ).json()["job_id"]
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"
    with TestClient(create_app(gateway_settings)) as client:
        done = wait_for_job(client, job_id)
        assert done["status"] == "completed", done
        assert "restart" in done["note"]
        assert client.get(f"/api/v1/jobs/{job_id}/result").status_code == 200


def test_ready_runs_a_real_probe_through_both_ensembles(gateway_client):
    response = gateway_client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert body["checks"]["portrait"].startswith("ok")
    assert body["checks"]["portrait_basic"].startswith("ok")
    assert "facecraft_gateway_triton_ready 1.0" in gateway_client.get("/metrics").text


def test_status_reports_models_and_weights(gateway_client, triton_server):
    body = gateway_client.get("/status").json()
    assert body["triton"]["reachable"] is True
    assert body["triton"]["version"]
    assert body["device"] == "cpu"
    models = {model["name"]: model for model in body["models"]}
    assert {"portrait", "portrait_basic", "codeformer", "u2net", "decode", "detect", "compose"} <= set(models)
    assert all(model["ready"] for model in models.values())
    assert models["codeformer"]["weights"] == "untrained"
    assert models["u2net"]["weights"] == "untrained"
    assert models["codeformer"]["instance_kinds"] == ["KIND_CPU"]
    assert body["weights"] == "untrained"


def test_metrics_after_processing(gateway_client, astronaut_jpeg):
    gateway_client.post(
        "/api/v1/process", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
    )
    text = gateway_client.get("/metrics").text
    assert 'facecraft_gateway_inferences_total{model="portrait_basic",outcome="ok"}' in text
    assert 'facecraft_gateway_requests_total{method="POST",route="/api/v1/process",status="200"}' in text
    assert 'facecraft_gateway_inference_duration_seconds_count{model="portrait_basic"}' in text


def test_api_key_on_with_real_triton(tmp_path, triton_server, astronaut_jpeg):
    settings = make_gateway_settings(tmp_path / "out", triton_server.grpc_url, api_key="k3y")
    with TestClient(create_app(settings)) as client:
        denied = client.post("/api/v1/process", files=upload("a.jpg", astronaut_jpeg))
        assert denied.status_code == 401
        headers = {"X-API-Key": "k3y"}
        body = client.post(
            "/api/v1/process",
            headers=headers,
            data={"enhance_face": "false"},
            files=upload("a.jpg", astronaut_jpeg),
        ).json()
        assert body["success"] is True
        assert client.get(body["png_url"]).status_code == 401
        assert client.get(body["png_url"], headers=headers).status_code == 200


def test_real_uvicorn_server_and_restart(gateway_server, astronaut_jpeg):
    with httpx.Client(base_url=gateway_server.url, timeout=120) as http:
        assert http.get("/health").json()["status"] == "ok"
        body = http.post(
            "/api/v1/process", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
        ).json()
        assert body["success"] is True
        png = http.get(body["png_url"]).content
        job = http.post(
            "/api/v1/jobs", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
        ).json()
    gateway_server.restart()
    with httpx.Client(base_url=gateway_server.url, timeout=120) as http:
        assert http.get(body["png_url"]).content == png
        done = wait_for_job(http, job["job_id"])
        assert done["status"] == "completed", done
        assert http.get(f"/api/v1/jobs/{job['job_id']}/result").status_code == 200


def test_disk_full_is_507_storage_error_with_nothing_left(
    gateway_client, gateway_settings, astronaut_jpeg, monkeypatch
):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    response = gateway_client.post(
        "/api/v1/process", data={"enhance_face": "false"}, files=upload("a.jpg", astronaut_jpeg)
    )
    monkeypatch.undo()
    assert response.status_code == 507, response.text
    assert response.json()["error"] == "storage_error"
    assert list((gateway_settings.output_dir / "jobs").iterdir()) == []
