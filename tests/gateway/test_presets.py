"""``preset=`` / ``layout=`` on the gateway against the real embedded Triton, and GET /api/v1/presets."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from facecraft.pipeline.presets import PRESETS
from tests.gateway.test_integration import wait_for_job

pytestmark = pytest.mark.integration


def upload(faces_dir, name="fr__obama-1080p.jpg"):
    return {"file": (name, (faces_dir / name).read_bytes(), "image/jpeg")}


def test_presets_route_serves_the_table(gateway_client):
    body = gateway_client.get("/api/v1/presets").json()
    assert [p["name"] for p in body["presets"]] == list(PRESETS)
    assert {layout["name"] for layout in body["layouts"]} == {"4x6", "10x15", "a4"}


def test_process_with_preset_and_layout(gateway_client, faces_dir):
    response = gateway_client.post(
        "/api/v1/process",
        data={"preset": "us_passport", "layout": "4x6", "enhance_face": "false", "return_base64": "true"},
        files=upload(faces_dir),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["result"]["output_size"] == {"width": 600, "height": 600}
    compliance = body["result"]["compliance"]
    assert compliance["preset"] == "us_passport" and compliance["geometry_passed"] is True
    assert compliance["checks"]["file_size"]["limit"] == 240 * 1024  # the preset's cap
    jpeg = Image.open(io.BytesIO(gateway_client.get(body["jpg_url"]).content))
    assert jpeg.size == (600, 600) and tuple(round(v) for v in jpeg.info["dpi"]) == (300, 300)
    assert jpeg.getpixel((300, 2)) >= (245, 245, 245)  # the preset's white, not the 240 default
    sheet = gateway_client.get(body["layout_url"])
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/jpeg"
    assert sheet.content == base64.b64decode(body["layout_base64"])
    assert Image.open(io.BytesIO(sheet.content)).size == (1200, 1800)


def test_async_job_with_preset(gateway_client, faces_dir):
    response = gateway_client.post(
        "/api/v1/jobs",
        data={"preset": "schengen", "layout": "a4", "enhance_face": "false"},
        files=upload(faces_dir),
    )
    assert response.status_code == 202, response.text
    status = wait_for_job(gateway_client, response.json()["job_id"])
    assert status["status"] == "completed", status
    assert status["result"]["compliance"]["print_sheet"]["copies"] == 36
    sheet = gateway_client.get(status["layout_url"])
    assert Image.open(io.BytesIO(sheet.content)).size == (2480, 3508)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preset": "mars_passport"}, "preset='mars_passport' is not one of"),
        ({"layout": "4x6"}, "needs a preset"),
        ({"preset": "schengen", "layout": "poster"}, "layout='poster' is not one of"),
    ],
)
def test_bad_preset_options_are_400_invalid_option(gateway_client, faces_dir, data, message):
    response = gateway_client.post("/api/v1/process", data=data, files=upload(faces_dir))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_option" and message in response.json()["error_message"]


def test_without_preset_nothing_changes(gateway_client, faces_dir):
    body = gateway_client.post(
        "/api/v1/process", data={"enhance_face": "false"}, files=upload(faces_dir)
    ).json()
    assert body["result"]["output_size"] == {"width": 648, "height": 648}
    assert "compliance" not in body["result"] and "layout_url" not in body
