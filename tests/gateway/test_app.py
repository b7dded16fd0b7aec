"""The app without a reachable Triton (a closed port): error contract, security, docs, metrics.

Everything here fails before or at the Triton call, so no server is needed; the success paths run
against the real embedded Triton in test_integration_*.py.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facecraft.gateway.app import create_app
from facecraft.gateway.settings import GatewaySettings
from facecraft.runtime.ports import free_port

API_KEY = "correct horse battery staple"


def closed_port_url() -> str:
    """host:port of a port on 127.0.0.1 that nothing listens on (outside the ephemeral range, so no
    outgoing connection can take it: facecraft.runtime.ports)."""
    return f"127.0.0.1:{free_port()}"


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_client(tmp_path, **overrides) -> TestClient:
    values = {
        "output_dir": tmp_path / "out",
        "triton_url": closed_port_url(),
        "triton_timeout_s": 5.0,
        "retry_after_s": 2,
        "ready_cache_s": 0.0,
        **overrides,
    }
    return TestClient(create_app(GatewaySettings(**values)))


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as test_client:
        yield test_client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"] == code
    assert isinstance(body["error_message"], str) and body["error_message"]
    return body


def test_health_is_live_without_triton(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_ready_is_503_with_retry_after_when_triton_is_down(client):
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    body = response.json()
    assert body["ready"] is False
    assert body["reason"].startswith("triton_unavailable")


@pytest.mark.parametrize("path", ["/api/v1/process", "/api/v1/process/quick"])
def test_processing_is_503_triton_unavailable_not_a_hang(client, path):
    started = time.monotonic()
    response = client.post(path, files={"file": ("a.jpg", small_jpeg(), "image/jpeg")})
    assert_error(response, 503, "triton_unavailable")
    assert response.headers["Retry-After"] == "2"
    assert time.monotonic() - started < 30


def test_batch_reports_triton_unavailable_per_file(client):
    files = [("files", (f"{i}.jpg", small_jpeg(), "image/jpeg")) for i in range(2)]
    response = client.post("/api/v1/process/batch", files=files)
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["successful"], body["failed"]) == (2, 0, 2)
    assert {item["error"] for item in body["results"]} == {"triton_unavailable"}


def test_status_reports_triton_unreachable(client):
    body = client.get("/status").json()
    assert body["triton"]["reachable"] is False
    assert body["version"]
    assert body["uptime_s"] >= 0
    assert "statistics" in body


@pytest.mark.parametrize(
    "data, code, status",
    [
        ({"width": "10"}, "invalid_option", 400),
        ({"height": "5000"}, "invalid_option", 400),
        ({"background_r": "256"}, "invalid_option", 400),
        ({"face_margin": "3"}, "invalid_option", 400),
        ({"enhance_fidelity": "-1"}, "invalid_option", 400),
        ({"max_jpeg_kb": "1"}, "invalid_option", 400),
        ({"width": "wide"}, "invalid_request", 422),
        ({"use_oval_mask": "perhaps"}, "invalid_request", 422),
    ],
)
def test_bad_options(client, data, code, status):
    response = client.post(
        "/api/v1/process", data=data, files={"file": ("a.jpg", small_jpeg(), "image/jpeg")}
    )
    body = assert_error(response, status, code)
    assert next(iter(data)) in body["error_message"]


@pytest.mark.parametrize(
    "path, data, named",
    [
        ("/api/v1/process/quick", {"preset": "us_passport"}, "preset"),
        ("/api/v1/process/quick", {"width": "300", "size": "300"}, "width"),
        ("/api/v1/jobs", {"processors": "face_enhancer", "width": "300"}, "width"),
        (
            "/api/v1/jobs",
            {"processors": "face_enhancer", "preset": "us_passport", "touch_up": "true"},
            "touch_up, preset",
        ),
        ("/api/v1/jobs", {"processors": ""}, "processors: empty"),
        ("/api/v1/processors/portrait", {"preset": "us_passport", "layout": "4x6"}, "portrait: "),
        ("/api/v1/process", {"foo": "bar", "size": "300"}, "foo, size: not a field of /api/v1/process"),
        ("/api/v1/process", {"processors": "face_enhancer"}, "processors"),
        ("/api/v1/jobs", {"processors": "face_enhancer", "return_base64": "true"}, "return_base64"),
        ("/api/v1/jobs", {"foo": "bar"}, "foo"),
    ],
    ids=[
        "quick-preset",
        "quick-width",
        "chain-width",
        "chain-preset-touch_up",
        "empty-processors",
        "portrait-layout",
        "process-unknown",
        "process-processors",
        "chain-return_base64",
        "job-unknown",
    ],
)
def test_options_a_route_would_ignore_are_refused(client, path, data, named):
    """A field that would be accepted and ignored is a 400 naming it, before anything is queued
    (no Triton here: the refusal comes first)."""
    response = client.post(path, data=data, files={"file": ("a.jpg", small_jpeg(), "image/jpeg")})
    body = assert_error(response, 400, "invalid_option")
    assert body["error_message"].startswith(named), body


@pytest.mark.parametrize("path", ["/api/v1/process", "/api/v1/process/quick", "/api/v1/jobs"])
def test_query_parameters_are_refused_not_ignored(client, path):
    """An option in the URL would be silently ignored by these form routes: 400 naming it."""
    response = client.post(
        f"{path}?enhance_face=false&width=300", files={"file": ("a.jpg", small_jpeg(), "image/jpeg")}
    )
    body = assert_error(response, 400, "invalid_option")
    assert (
        body["error_message"].startswith("enhance_face, width: ") and "form fields" in body["error_message"]
    )


@pytest.mark.parametrize(
    "path, fields, named",
    [
        ("/api/v1/process", [("file", "a.jpg"), ("file", "b.jpg")], "file"),
        ("/api/v1/process", [("file", "a.jpg"), ("width", "300"), ("width", "400")], "width"),
        ("/api/v1/process/quick", [("file", "a.jpg"), ("file", "b.jpg")], "file"),
        ("/api/v1/jobs", [("file", "a.jpg"), ("file", "b.jpg")], "file"),
        ("/api/v1/jobs", [("file", "a.jpg"), ("processors", "face_enhancer"), ("processors", "background_remover")],
         "processors"),
        ("/api/v1/process/batch", [("files", "a.jpg"), ("width", "300"), ("width", "400")], "width"),
        ("/api/v1/processors/face_enhancer", [("file", "a.jpg"), ("file", "b.jpg")], "file"),
        ("/api/v1/processors/face_enhancer", [("file", "a.jpg"), ("fidelity", "0.2"), ("fidelity", "0.9")],
         "fidelity"),
    ],
    ids=["process-file", "process-width", "quick-file", "job-file", "job-processors", "batch-width",
         "processor-file", "processor-option"],
)  # fmt: skip
def test_a_field_sent_twice_is_refused_not_shadowed(client, path, fields, named):
    """A second value of a one-value field would replace (or be shadowed by) the first without a
    word: 400 naming it, before anything runs (no Triton here). The batch's ``files`` repeat."""
    files = [
        (name, (value, small_jpeg(), "image/jpeg")) for name, value in fields if name in ("file", "files")
    ]
    data: dict[str, list[str]] = {}
    for name, value in fields:
        if name not in ("file", "files"):
            data.setdefault(name, []).append(value)
    response = client.post(path, data=data, files=files)
    body = assert_error(response, 400, "invalid_option")
    assert body["error_message"] == f"{named}: sent more than once; each field takes one value", body


def test_the_batch_takes_its_files_field_many_times(client):
    from facecraft.gateway.forms import list_fields
    from facecraft.gateway.routes_process import process_batch

    assert list_fields(process_batch) == ("files",)
    files = [
        ("files", ("a.jpg", small_jpeg(), "image/jpeg")),
        ("files", ("b.jpg", small_jpeg(), "image/jpeg")),
    ]
    response = client.post("/api/v1/process/batch?width=300", files=files)
    # the query parameter is what it refuses, not the repeated files
    assert assert_error(response, 400, "invalid_option")["error_message"].startswith("width: ")


def test_a_processor_route_refuses_query_parameters(client):
    response = client.post(
        "/api/v1/processors/face_enhancer?fidelity=0.2", files={"file": ("a.jpg", small_jpeg(), "image/jpeg")}
    )
    message = assert_error(response, 400, "invalid_option")["error_message"]
    assert message.startswith("fidelity: /api/v1/processors/face_enhancer reads no query parameters"), message
    assert "(file, fidelity" in message


def test_a_batch_refuses_fields_it_does_not_take(client):
    files = [("files", ("a.jpg", small_jpeg(), "image/jpeg"))]
    response = client.post("/api/v1/process/batch", data={"processors": "face_enhancer"}, files=files)
    assert assert_error(response, 400, "invalid_option")["error_message"].startswith(
        "processors: not a field"
    )


def test_missing_file_is_invalid_request(client):
    assert_error(client.post("/api/v1/process", data={"width": "100"}), 422, "invalid_request")


@pytest.mark.parametrize(
    "payload, status, code",
    [
        (b"", 400, "invalid_image"),
        (b"GIF89a" + b"\0" * 64, 415, "unsupported_media_type"),
        (b"%PDF-1.7 not an image at all", 415, "unsupported_media_type"),
        (b"#!/bin/sh\nrm -rf /\n", 415, "unsupported_media_type"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/process", "/api/v1/process/quick", "/api/v1/jobs"])
def test_non_images_are_rejected_by_content(client, path, payload, status, code):
    # The name and declared type claim JPEG; only the bytes count.
    response = client.post(path, files={"file": ("photo.jpg", payload, "image/jpeg")})
    assert_error(response, status, code)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/process",
        "/api/v1/process/quick",
        "/api/v1/process/batch",
        "/api/v1/processors/face_enhancer",
        "/api/v1/jobs",  # without processors= it is the portrait job: per image only (docs/video.md)
    ],
)
def test_a_video_upload_to_an_image_endpoint_says_it_is_a_video(client, tmp_path, path):
    from tests.fixtures.videos import write_clip

    clip = tmp_path / "clip.webm"
    write_clip(clip, format="webm", codec="libvpx-vp9", frames=3, audio=None)
    upload = ("clip.webm", clip.read_bytes(), "video/webm")
    if path.endswith("batch"):  # per-file failures are reported in the results
        response = client.post(path, files=[("files", upload)])
        assert response.status_code == 200
        body = response.json()["results"][0]
        assert body["error"] == "unsupported_media_type"
    else:
        body = assert_error(client.post(path, files={"file": upload}), 415, "unsupported_media_type")
    assert "it is a video (WebM)" in body["error_message"] or (
        path.endswith("jobs") and "a video (WebM): the portrait works on one image" in body["error_message"]
    )


def small_photo(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(buffer, format=fmt, quality=80)
    return buffer.getvalue()


@pytest.mark.parametrize("path", ["/api/v1/process", "/api/v1/process/quick"])
def test_heic_and_avif_uploads_pass_the_gateway_checks(client, cases_dir, path):
    # Sniffed by content, whatever the name: they reach Triton (here: unreachable → 503), no 415.
    uploads = [
        ("IMG_0001.HEIC", small_photo("HEIF"), "image/heic"),
        ("photo.avif", small_photo("AVIF"), "image/avif"),
        ("avif_named_jpg.jpg", (cases_dir / "avif_named_jpg.jpg").read_bytes(), "image/jpeg"),
    ]
    for upload in uploads:
        assert_error(client.post(path, files={"file": upload}), 503, "triton_unavailable")


def test_heic_pixel_bomb_is_rejected_before_triton(tmp_path):
    with make_client(tmp_path, max_image_pixels=1000) as client:
        upload = ("IMG_0001.HEIC", small_photo("HEIF"), "image/heic")
        assert_error(client.post("/api/v1/process", files={"file": upload}), 400, "image_too_large")


def test_oversize_upload_is_413(tmp_path):
    with make_client(tmp_path, max_upload_mb=0.05) as client:
        big = b"\xff\xd8\xff" + b"\0" * 60_000
        response = client.post("/api/v1/process", files={"file": ("big.jpg", big, "image/jpeg")})
        assert_error(response, 413, "file_too_large")
        response = client.post("/api/v1/jobs", files={"file": ("big.jpg", big, "image/jpeg")})
        assert_error(response, 413, "file_too_large")
        assert not any((tmp_path / "out" / "jobs").iterdir())


@pytest.mark.parametrize("field", ["file", "source"])
def test_a_truncated_image_is_refused_at_submit_not_queued(tmp_path, field):
    """An async job's image (and face_swapper's ``source``) is decoded once before it is queued:
    a truncated JPEG is 400 ``invalid_image`` now, not a 202 for a job that can only fail, and no
    job folder is left (no Triton here: the refusal comes first)."""
    truncated = small_jpeg()[:-200]
    with make_client(tmp_path) as client:
        files = {"file": ("a.jpg", truncated if field == "file" else small_jpeg(), "image/jpeg")}
        data = {}
        if field == "source":
            files["source"] = ("id.jpg", truncated, "image/jpeg")
            data["processors"] = "face_swapper"
        response = client.post("/api/v1/jobs", files=files, data=data)
        message = assert_error(response, 400, "invalid_image")["error_message"]
        assert message.startswith("invalid_image: decode: corrupt or truncated jpeg data"), message
        assert not any((tmp_path / "out" / "jobs").iterdir())
        # the same photo whole is accepted (queued; no Triton to run it here)
        files = {"file": ("a.jpg", small_jpeg(), "image/jpeg")}
        if field == "source":
            files["source"] = ("id.jpg", small_jpeg(), "image/jpeg")
        assert client.post("/api/v1/jobs", files=files, data=data).status_code == 202


def test_oversize_body_is_rejected_while_streaming(tmp_path):
    with make_client(tmp_path, max_upload_mb=0.05) as client:
        declared = client.post(
            "/api/v1/process",
            content=b"x" * 10,
            headers={
                "Content-Length": str(10 * 1024 * 1024),
                "Content-Type": "multipart/form-data; boundary=b",
            },
        )
        assert_error(declared, 413, "file_too_large")

        def chunks():
            for _ in range(40):
                yield b"y" * 65536

        streamed = client.post(
            "/api/v1/process", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert_error(streamed, 413, "file_too_large")


def test_batch_file_limit(tmp_path):
    with make_client(tmp_path, batch_max_files=2) as client:
        files = [("files", (f"{i}.jpg", small_jpeg(), "image/jpeg")) for i in range(3)]
        assert_error(client.post("/api/v1/process/batch", files=files), 400, "too_many_files")


def test_declared_pixel_bomb_is_rejected_before_triton(tmp_path):
    with make_client(tmp_path, max_image_pixels=1000) as client:
        response = client.post("/api/v1/process", files={"file": ("a.jpg", small_jpeg(), "image/jpeg")})
        assert_error(response, 400, "image_too_large")


@pytest.mark.parametrize(
    "path, statuses",
    [
        ("/api/v1/download/..%2F..%2Fetc%2Fpasswd/png", (400, 404)),
        ("/api/v1/download/%2e%2e/png", (400,)),
        ("/api/v1/download/..%2fjobs/png", (400, 404)),
        ("/api/v1/download/%2Fetc%2Fpasswd/png", (400, 404)),
        ("/api/v1/download//etc/passwd/png", (400, 404)),
        ("/api/v1/download/" + "0" * 32 + "/..%2F..%2Fjob.json", (400, 404)),
        ("/api/v1/download/" + "0" * 32 + "/json", (400,)),
        ("/api/v1/jobs/..%2F..%2Fetc", (400, 404)),
        ("/api/v1/jobs/" + "A" * 32, (400,)),
        ("/api/v1/jobs/" + "0" * 32 + "/result?format=../../etc/passwd", (400,)),
        ("/api/v1/download/" + "0" * 32 + "/-1/png", (400,)),
    ],
)
def test_traversal_attempts_are_rejected(client, tmp_path, path, statuses):
    secret = tmp_path / "out" / "secret.txt"
    secret.write_text("do not serve me")
    response = client.get(path)
    assert response.status_code in statuses, (path, response.status_code, response.text)
    assert response.json()["success"] is False
    assert "do not serve me" not in response.text
    assert "root:" not in response.text


def test_unknown_jobs(client):
    job_id = "0" * 32
    assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "not_found")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 404, "not_found")
    assert_error(client.get(f"/api/v1/download/{job_id}/png"), 404, "not_found")
    assert_error(client.get(f"/api/v1/download/{job_id}/0/jpg"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 404, "not_found")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/result?format=gif"), 400, "invalid_format")


def test_routing_errors_use_the_error_shape(client):
    assert_error(client.get("/api/v1/nope"), 404, "not_found")
    assert_error(client.get("/api/v1/process"), 405, "method_not_allowed")


def test_api_key_enforced_on_api_routes_only(tmp_path):
    with make_client(tmp_path, api_key=API_KEY) as client:
        job = "0" * 32
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY[:-1]}):
            response = client.get(f"/api/v1/jobs/{job}", headers=headers)
            assert_error(response, 401, "unauthorized")
            response = client.post(
                "/api/v1/process", headers=headers, files={"file": ("a.jpg", small_jpeg(), "image/jpeg")}
            )
            assert_error(response, 401, "unauthorized")
        assert_error(client.get(f"/api/v1/jobs/{job}", headers={"X-API-Key": API_KEY}), 404, "not_found")
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_api_key_off_by_default(client):
    assert_error(client.get("/api/v1/jobs/" + "0" * 32), 404, "not_found")


def test_cors_from_settings(tmp_path):
    origin = "https://portraits.example"
    with make_client(tmp_path, cors_origins=[origin]) as client:
        response = client.options(
            "/api/v1/process",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert response.headers["access-control-allow-origin"] == origin
        other = client.options(
            "/api/v1/process",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/health")
    client.get("/api/v1/jobs/" + "0" * 32)
    client.post("/api/v1/process", files={"file": ("a.jpg", small_jpeg(), "image/jpeg")})
    text = client.get("/metrics").text
    assert 'facecraft_gateway_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert 'route="/api/v1/jobs/{job_id}",status="404"' in text
    assert 'facecraft_gateway_inferences_total{model="portrait",outcome="triton_unavailable"} 1.0' in text
    for name in (
        "facecraft_gateway_request_duration_seconds_bucket",
        "facecraft_gateway_requests_in_flight",
        "facecraft_gateway_inferences_waiting",
        "facecraft_gateway_job_queue_depth",
        "facecraft_gateway_jobs_total",
    ):
        assert name in text


def test_openapi_documents_every_endpoint_field_and_error(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("post", "/api/v1/process"),
        ("post", "/api/v1/process/quick"),
        ("post", "/api/v1/process/batch"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/{job_id}"),
        ("delete", "/api/v1/jobs/{job_id}"),
        ("get", "/api/v1/jobs/{job_id}/result"),
        ("get", "/api/v1/download/{job_id}/{fmt}"),
        ("get", "/api/v1/download/{job_id}/{index}/{fmt}"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/status"),
        ("get", "/metrics"),
    }
    assert expected <= {(method, path) for path, item in paths.items() for method in item}
    process = paths["/api/v1/process"]["post"]
    for status in ("400", "401", "413", "415", "422", "503"):
        assert status in process["responses"], status
    assert "invalid_image" in process["responses"]["400"]["description"]
    schema_ref = process["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    fields = spec["components"]["schemas"][schema_ref]["properties"]
    for field in (
        "file",
        "width",
        "height",
        "background_r",
        "background_g",
        "background_b",
        "face_margin",
        "use_oval_mask",
        "enhance_face",
        "enhance_fidelity",
        "return_base64",
        "max_jpeg_kb",
        "touch_up",
    ):
        assert field in fields, field
    assert client.get("/docs").status_code == 200


def test_queued_job_survives_a_gateway_restart(tmp_path):
    settings = {"job_max_attempts": 100, "retry_after_s": 30}
    with make_client(tmp_path, **settings) as client:
        response = client.post("/api/v1/jobs", files={"file": ("a.jpg", small_jpeg(), "image/jpeg")})
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        assert response.json()["status"] == "queued"
    # A new app instance over the same OUTPUT_DIR (Triton still down): the job is still there,
    # re-queued from its stored input, not dropped.
    with make_client(tmp_path, **settings) as client:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        assert body["status"] in ("queued", "running")
        assert body["kind"] == "async"
        assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 409, "job_not_finished")
        # DELETE cancels a pending job (kept, status cancelled), a second DELETE removes it
        assert client.delete(f"/api/v1/jobs/{job_id}").json() == {
            "success": True,
            "job_id": job_id,
            "deleted": False,
            "cancelled": True,
        }
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 409, "job_cancelled")
        assert client.delete(f"/api/v1/jobs/{job_id}").json()["deleted"] is True
        assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "not_found")


@pytest.mark.parametrize("size", [0, 63, 4097])
def test_quick_names_the_size_field_it_refuses(tmp_path, size):
    with make_client(tmp_path) as client:
        response = client.post(
            "/api/v1/process/quick",
            files={"file": ("a.jpg", small_jpeg(), "image/jpeg")},
            data={"size": size},
        )
    assert_error(response, 400, "invalid_option")
    assert response.json()["error_message"] == f"size must be in 64..4096, got {size}"
