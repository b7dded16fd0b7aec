"""The bad-input corpus through the gateway (a real uvicorn process in front of the real Triton).

Each case gets its documented HTTP status and ``error`` code (facecraft.gateway.errors catalogue,
docs/api.md), the gateway stays healthy, and nothing is written outside the job's own folder:
the test snapshots the gateway's whole root (outputs + its TMPDIR) before and after each request.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from facecraft.gateway.errors import ERROR_CATALOGUE
from tests.reliability import corpus
from tests.reliability.processes import tree_snapshot

pytestmark = pytest.mark.integration

CASE_NAMES = [case.name for case in corpus.build_input_cases(np.zeros((64, 64, 3), np.uint8))]
FORM_OPTION_CASES = [case for case in corpus.build_option_cases() if case.form is not None]
ESCAPE_TARGET = Path("/tmp/facecraft-escape.jpg")


@pytest.fixture(scope="module")
def cases(astronaut_rgb) -> dict[str, corpus.InputCase]:
    return {case.name: case for case in corpus.build_input_cases(astronaut_rgb)}


@pytest.fixture(scope="module")
def http(reliability_gateway):
    with httpx.Client(base_url=reliability_gateway.url, timeout=300) as client:
        yield client


def post_process(http: httpx.Client, case: corpus.InputCase, **form) -> httpx.Response:
    fields = {"enhance_face": "false", **form}
    return http.post(
        "/api/v1/process", files={"file": (case.filename, case.data, case.content_type)}, data=fields
    )


@pytest.fixture(scope="module")
def reference_position(http, cases) -> dict:
    response = post_process(http, cases["jpeg_named_txt"])
    assert response.status_code == 200 and response.json()["success"], response.text
    return response.json()["result"]["face_position"]


def new_paths_outside_job(before: set[str], after: set[str], job_id: str | None) -> set[str]:
    """Paths that appeared and are not inside ``outputs/jobs/<job_id>``."""
    allowed = {"outputs/jobs"} | ({f"outputs/jobs/{job_id}"} if job_id else set())
    prefix = f"outputs/jobs/{job_id}/" if job_id else None
    return {p for p in after - before if p not in allowed and not (prefix and p.startswith(prefix))}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_upload_case_gets_its_documented_answer(name, cases, http, reliability_gateway, reference_position):
    case = cases[name]
    escape_existed = ESCAPE_TARGET.exists()
    before = tree_snapshot(reliability_gateway.root)
    response = post_process(http, case)
    body = response.json()
    after = tree_snapshot(reliability_gateway.root)
    job_id = body.get("job_id")

    assert http.get("/health").status_code == 200, "the gateway must stay up"
    leaked = new_paths_outside_job(before, after, job_id)
    assert not leaked, f"files outside the job folder: {sorted(leaked)}"
    assert not any(p.startswith("tmp/") for p in after - before), "temporary files left behind"
    assert escape_existed or not ESCAPE_TARGET.exists(), "the upload name chose a path"

    if case.gateway_error is None:
        assert response.status_code == 200 and body["success"] is True, response.text
        position = body["result"]["face_position"]
        tolerance = 0.1 * max(reference_position["width"], reference_position["height"])
        for key in ("x", "y", "width", "height"):
            assert abs(position[key] - reference_position[key]) <= tolerance, (
                name,
                position,
                reference_position,
            )
        for url, fmt in ((body["png_url"], "PNG"), (body["jpg_url"], "JPEG")):
            download = http.get(url)
            assert download.status_code == 200
            image = Image.open(io.BytesIO(download.content))
            image.load()
            assert image.format == fmt
        files = {p.rsplit("/", 1)[-1] for p in after - before if p.startswith(f"outputs/jobs/{job_id}/")}
        assert not any(f.startswith(".tmp-") for f in files), (
            f"temporary file left in the job folder: {files}"
        )
    elif case.gateway_error == corpus.NO_FACE_DETECTED:
        assert response.status_code == 200, response.text
        assert body["success"] is False and body["error"] == corpus.NO_FACE_DETECTED, body
    else:
        expected_status = ERROR_CATALOGUE[case.gateway_error][0]
        assert (response.status_code, body.get("error")) == (expected_status, case.gateway_error), (
            response.text
        )
        assert body["success"] is False and body["error_message"], body
        assert not {p for p in after - before if p.startswith("outputs/jobs/")} - {"outputs/jobs"}, (
            "a refused upload must not leave a job folder"
        )


@pytest.mark.parametrize("case", FORM_OPTION_CASES, ids=lambda c: c.name)
def test_form_option_out_of_range_or_wrong_type_is_refused(case, cases, http, reliability_gateway):
    before = tree_snapshot(reliability_gateway.root)
    response = post_process(http, cases["jpeg_named_txt"], **case.form)
    body = response.json()
    assert body.get("error") in case.gateway_errors, response.text
    assert response.status_code == ERROR_CATALOGUE[body["error"]][0], response.text
    assert body["error_message"], body
    assert tree_snapshot(reliability_gateway.root) - before <= {"outputs/jobs"}, (
        "a refused request wrote files"
    )
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "empty_file",
        "text_as_jpg",
        "png_bomb_declared_100k",
        "too_many_bytes",
        "truncated_jpeg",
        "truncated_png",
        "truncated_heic",
        "corrupt_avif",
    ],
)
def test_async_job_refuses_bad_uploads_up_front(name, cases, http):
    """Bad uploads are refused at submit time (no job that can only fail is queued)."""
    case = cases[name]
    response = http.post("/api/v1/jobs", files={"file": (case.filename, case.data, case.content_type)})
    body = response.json()
    assert (response.status_code, body.get("error")) == (
        ERROR_CATALOGUE[case.gateway_error][0],
        case.gateway_error,
    ), response.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/download/../../etc/passwd/png",
        "/api/v1/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd/png",
        "/api/v1/download/00000000000000000000000000000000/..%2fjob.json",
        "/api/v1/jobs/..%2f..%2f",
        "/api/v1/jobs/abc%00def/result",
    ],
)
def test_traversal_in_download_paths_is_refused(path, http):
    response = http.get(path)
    assert response.status_code in (400, 404), response.text
    assert "root:" not in response.text
