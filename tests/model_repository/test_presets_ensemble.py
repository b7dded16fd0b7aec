"""ID-photo presets end to end on the embedded Triton (tiny, untrained exports: the crown is the
landmark estimate) with real photos from ../shared/data/faces."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from facecraft.client.portrait_client import PortraitClient
from facecraft.pipeline.presets import PRESETS

pytestmark = pytest.mark.integration

OBAMA = "fr__obama-1080p.jpg"
TIGHT_CROP = "dlib__000288_00470387.jpg"


@pytest.fixture(scope="module")
def client(triton_server):
    with PortraitClient(triton_server.grpc_url, "grpc", timeout_s=300.0) as portrait_client:
        yield portrait_client


def photo(faces_dir, name: str) -> bytes:
    return (faces_dir / name).read_bytes()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_returns_its_exact_pixel_size_and_dpi(client, faces_dir, name):
    preset = PRESETS[name]
    result = client.process(photo(faces_dir, OBAMA), enhance=False, preset=name)
    for data in (result.png, result.jpeg):
        image = Image.open(io.BytesIO(data))
        assert image.size == preset.pixel_size
        assert tuple(round(v) for v in image.info["dpi"]) == (preset.dpi, preset.dpi)
    assert result.output_size == preset.pixel_size
    assert result.compliance["preset"] == name
    assert result.compliance["checks"]["crown_source"]["value"] == "estimate"  # untrained mask
    assert result.print_sheet is None


def test_obama_passes_the_us_passport_geometry(client, faces_dir):
    result = client.process(photo(faces_dir, OBAMA), enhance=False, preset="us_passport")
    report = result.compliance
    assert report["geometry_passed"] is True, report
    checks = report["checks"]
    low, high = PRESETS["us_passport"].head_mm
    assert low <= checks["head_height"]["value"] <= high
    assert 50 <= checks["head_height"]["percent"] <= 69
    assert 56 <= checks["eye_line"]["percent"] <= 69
    assert checks["face_count"]["value"] == 1
    assert checks["file_size"]["limit"] == 240 * 1024 and checks["file_size"]["passed"] is True
    assert len(result.jpeg) <= 240 * 1024
    assert checks["edited_background"]["passed"] is False  # the State Department forbids it


def test_a_tight_crop_is_padded_and_reported_not_stretched(client, faces_dir):
    result = client.process(photo(faces_dir, TIGHT_CROP), enhance=False, preset="schengen")
    checks = result.compliance["checks"]
    assert checks["padding"]["value"] is True
    assert {"top", "bottom"} <= set(checks["padding"]["sides"])
    assert any("padded with the background" in note for note in result.compliance["notes"])
    # uniform scale: the head still lands in range, the source face is enlarged (reported)
    assert result.compliance["geometry_passed"] is True
    assert checks["resolution"]["passed"] is False and checks["resolution"]["value"] > 1
    # padding is the background colour (white for this preset), not stretched pixels
    image = Image.open(io.BytesIO(result.jpeg)).convert("RGB")
    assert all(abs(c - 255) <= 6 for c in image.getpixel((image.width // 2, 1)))


def test_print_sheet_copies_pixels_and_dpi(client, faces_dir):
    result = client.process(photo(faces_dir, OBAMA), enhance=False, preset="schengen", layout="4x6")
    sheet = Image.open(io.BytesIO(result.print_sheet))
    assert sheet.size == (1800, 1200)  # 4×6 in at 300 dpi, landscape holds more
    assert tuple(round(v) for v in sheet.info["dpi"]) == (300, 300)
    assert result.compliance["print_sheet"]["copies"] == 8


def test_no_preset_keeps_the_default_portrait(client, faces_dir):
    result = client.process(photo(faces_dir, OBAMA), enhance=False)
    assert result.output_size == (648, 648)
    assert result.compliance is None and result.print_sheet is None
    assert "dpi" not in Image.open(io.BytesIO(result.jpeg)).info


def test_an_unknown_preset_is_an_invalid_option_from_the_server(triton_server, faces_dir):
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[photo(faces_dir, OBAMA)]], dtype=np.object_))
    preset = grpcclient.InferInput("PRESET", [1, 1], "BYTES")
    preset.set_data_from_numpy(np.array([[b"mars_passport"]], dtype=np.object_))
    with pytest.raises(Exception, match="invalid_option: decode: preset='mars_passport'"):
        client.infer("portrait_basic", [image, preset])


def test_cli_writes_the_compliance_report_and_the_sheet(triton_server, faces_dir, tmp_path):
    import json

    from facecraft.cli import main

    out = tmp_path / "out"
    code = main(
        ["process", str(faces_dir / OBAMA), "-o", str(out), "--url", triton_server.grpc_url,
         "--no-enhance", "--preset", "japan_passport", "--layout", "10x15"]
    )  # fmt: skip
    assert code == 0
    stem = OBAMA.rsplit(".", 1)[0]
    assert Image.open(out / f"{stem}.jpg").size == (413, 531)
    report = json.loads((out / f"{stem}.compliance.json").read_text())
    assert report["preset"] == "japan_passport" and report["checks"]["top_margin"]["passed"] is True
    assert Image.open(out / f"{stem}.sheet.jpg").size == (1772, 1181)
