"""ID-photo geometry and compliance on synthetic 68-point landmark sets (no Triton, no dlib)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline.compose import eye_centres
from facecraft.pipeline.idphoto import (
    compliance_report,
    crown_from_alpha,
    make_id_photo,
    place_head,
)
from facecraft.pipeline.presets import MM_PER_INCH, PRESETS

US = PRESETS["us_passport"]
SCHENGEN = PRESETS["schengen"]
JAPAN = PRESETS["japan_passport"]


def face_landmarks(centre=(500.0, 500.0), eye_distance=100.0, roll_deg=0.0) -> np.ndarray:
    """A plausible dlib-68 layout: eyes at ``centre`` ± d/2, chin 1.2 d below, jaw on a half-ellipse,
    rotated by ``roll_deg`` about the eye midpoint (positive: right eye lower, image coordinates)."""
    cx, cy = centre
    d = eye_distance
    points = np.zeros((68, 2))
    for i in range(17):  # jaw 0..16: from the left temple round the chin (8) to the right temple
        t = math.pi * i / 16
        points[i] = (cx - d * math.cos(t), cy + 1.2 * d * math.sin(t))
    for start, ex in ((36, cx - d / 2), (42, cx + d / 2)):  # eyes: hexagons of radius d/6
        for k in range(6):
            a = 2 * math.pi * k / 6
            points[start + k] = (ex - d / 6 * math.cos(a), cy + d / 12 * math.sin(a))
    points[17:27] = [(cx - d + 2 * d * k / 9, cy - 0.3 * d) for k in range(10)]  # brows
    points[27:36] = [(cx, cy + 0.1 * d * k) for k in range(9)]  # nose
    points[48:68] = [(cx - 0.4 * d + 0.8 * d * k / 19, cy + 0.85 * d) for k in range(20)]  # mouth
    angle = math.radians(roll_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - (cx, cy)) @ rotation.T + (cx, cy)


def mm(px: float, preset) -> float:
    return px / preset.dpi * MM_PER_INCH


def report_for(preset, placement, **overrides):
    arguments = dict(
        face_count=1, jpeg_bytes=50_000, background=preset.default_background, mask_trusted=False
    )
    arguments.update(overrides)
    return compliance_report(preset, placement, **arguments)


@pytest.mark.parametrize("preset", [US, SCHENGEN, JAPAN, PRESETS["canada_passport"], PRESETS["cn_1inch"]])
def test_a_levelled_face_lands_in_the_middle_of_the_ranges(preset):
    placement = place_head(face_landmarks(), (1000, 1200), preset)
    head = mm(placement.chin_y - placement.crown_y, preset)
    assert head == pytest.approx(sum(preset.head_mm) / 2, abs=0.01)
    if preset.eye_mm:
        eye = mm(preset.pixel_size[1] - placement.eye_y, preset)
        assert eye == pytest.approx(sum(preset.eye_mm) / 2, abs=0.01)
    if preset.top_margin_mm:
        assert mm(placement.crown_y, preset) == pytest.approx(sum(preset.top_margin_mm) / 2, abs=0.01)
    assert placement.padded_sides == () and placement.crown_source == "estimate"
    report = report_for(preset, placement)
    assert report["geometry_passed"] is True
    assert report["checks"]["head_height"]["passed"] is True


def test_crown_estimate_is_one_chin_eye_distance_above_the_eyes():
    placement = place_head(face_landmarks(), (1000, 1200), US)
    assert placement.eye_y - placement.crown_y == pytest.approx(placement.chin_y - placement.eye_y)


def test_a_rolled_face_is_levelled_and_reported():
    landmarks = face_landmarks(roll_deg=12.0)
    placement = place_head(landmarks, (1000, 1200), US)
    assert placement.roll_deg == pytest.approx(12.0, abs=0.01)
    left, right = eye_centres(landmarks)
    out = np.array([left, right]) @ placement.matrix[:, :2].T + placement.matrix[:, 2]
    assert out[0, 1] == pytest.approx(out[1, 1], abs=1e-6)  # eyes level in the output
    assert (out[0, 0] + out[1, 0]) / 2 == pytest.approx(US.pixel_size[0] / 2, abs=0.5)  # centred
    report = report_for(US, placement)
    assert report["checks"]["roll"]["value"] == 12.0 and report["checks"]["roll"]["passed"] is True
    assert report["geometry_passed"] is True
    head = mm(placement.chin_y - placement.crown_y, US)
    assert US.head_mm[0] <= head <= US.head_mm[1]


def test_a_roll_beyond_the_limit_fails_the_geometry():
    placement = place_head(face_landmarks(roll_deg=30.0), (1000, 1200), US)
    report = report_for(US, placement)
    assert report["checks"]["roll"]["passed"] is False and report["geometry_passed"] is False


def test_a_face_near_the_top_edge_is_padded_and_still_in_range():
    landmarks = face_landmarks(centre=(500.0, 60.0))  # the crown estimate is above the photo
    placement = place_head(landmarks, (1000, 600), SCHENGEN)
    assert "top" in placement.padded_sides and placement.padded_fraction > 0.05
    report = report_for(SCHENGEN, placement)
    assert report["geometry_passed"] is True
    assert report["checks"]["padding"]["value"] is True
    assert any("top" in note and "padded" in note for note in report["notes"])


def test_a_face_at_the_left_edge_is_padded_on_the_left():
    placement = place_head(face_landmarks(centre=(90.0, 500.0)), (1000, 1200), US)
    assert "left" in placement.padded_sides and "right" not in placement.padded_sides


def test_padding_is_the_background_not_stretched_pixels():
    rgb = np.full((600, 1000, 3), 90, np.uint8)
    alpha = np.ones((600, 1000), np.float32)
    made = make_id_photo(
        rgb,
        alpha,
        face_landmarks(centre=(500.0, 60.0)),
        SCHENGEN,
        background=(255, 255, 255),
        max_jpeg_kb=200,
        face_count=1,
        mask_trusted=False,
    )
    image = np.asarray(Image.open(io.BytesIO(made.jpeg)).convert("RGB")).astype(int)
    assert image.shape[:2] == (531, 413)
    assert np.abs(image[2, 206] - 255).max() <= 4  # padded top: background
    assert np.abs(image[400, 206] - 90).max() <= 4  # the photo itself
    png = Image.open(io.BytesIO(made.png))
    assert png.mode == "RGBA" and png.getpixel((206, 2))[3] == 0
    assert tuple(round(v) for v in png.info["dpi"]) == (300, 300)


def test_crown_from_a_trusted_mask():
    landmarks = face_landmarks()
    alpha = np.zeros((1200, 1000), np.float32)
    alpha[330:, 380:620] = 1.0  # the person starts at row 330 above the eyes (row 500)
    placement = place_head(landmarks, (1000, 1200), US, alpha=alpha)
    assert placement.crown_source == "mask" and not placement.crown_clipped
    chin_src, crown_src = 500 + 120.0, 330.0
    assert placement.scale == pytest.approx(
        (sum(US.head_mm) / 2 * US.dpi / MM_PER_INCH) / (chin_src - crown_src)
    )


def test_a_mask_reaching_the_top_edge_leaves_the_head_height_unknown():
    alpha = np.zeros((1200, 1000), np.float32)
    alpha[:, 380:620] = 1.0
    placement = place_head(face_landmarks(), (1000, 1200), US, alpha=alpha)
    assert placement.crown_clipped
    check = report_for(US, placement)["checks"]["head_height"]
    assert check["passed"] is None and "true height is unknown" in check["note"]


def test_an_unusable_mask_falls_back_to_the_estimate():
    band = crown_from_alpha(np.zeros((100, 100)), np.ones((100, 100), bool), (40, 60), 50)
    assert band is None
    placement = place_head(face_landmarks(), (1000, 1200), US, alpha=np.zeros((1200, 1000), np.float32))
    assert placement.crown_source == "estimate"


def test_file_size_background_colour_face_count_checks():
    placement = place_head(face_landmarks(), (1000, 1200), US)
    report = report_for(US, placement, jpeg_bytes=300 * 1024, background=(0, 0, 255), face_count=2)
    checks = report["checks"]
    assert checks["file_size"]["passed"] is False and checks["file_size"]["limit"] == 240 * 1024
    assert checks["background_colour"]["passed"] is False
    assert checks["face_count"]["passed"] is False and report["geometry_passed"] is False
    assert checks["background_uniformity"]["passed"] is None  # untrained mask: not measured
    assert checks["edited_background"]["accepted"] is False


def test_background_uniformity_with_a_trusted_mask():
    placement = place_head(face_landmarks(), (1000, 1200), US)
    report = report_for(US, placement, mask_trusted=True, background_std_value=30.0)
    assert report["checks"]["background_uniformity"]["passed"] is False


def test_degenerate_landmarks_are_an_invalid_image():
    from facecraft.pipeline.errors import PipelineError

    landmarks = face_landmarks()
    landmarks[8] = landmarks[36:48].mean(axis=0)
    with pytest.raises(PipelineError, match="chin at or above the eyes"):
        place_head(landmarks, (1000, 1200), US)


def _compose_inputs(id_photo):
    from facecraft.pipeline.options import resolve_options

    rgb = np.full((1200, 1000, 3), 200, np.uint8)
    rgb[330:, 380:620] = 90  # the "person": head and shoulders from row 330 down
    seg_map = np.zeros((1, 320, 320), np.float32)
    seg_map[0, round(330 * 320 / 1200) :, round(380 * 320 / 1000) : round(620 * 320 / 1000)] = 1.0
    return {
        "RGB": rgb,
        "SEG_MAP": seg_map,
        "LANDMARKS": face_landmarks().astype(np.float32),
        "FACE_BOX_WORK": np.array([400, 400, 200, 240], np.float32),
        "OPTIONS": resolve_options(width=600, height=600, background=(255, 255, 255)).to_vector(),
        "ORIGINAL_SIZE": np.array([1000, 1200], np.int32),
        "FACE_COUNT": np.array([1], np.int32),
        "ID_PHOTO": id_photo.to_vector(),
    }


@pytest.mark.parametrize("trusted", [True, False])
def test_compose_stage_takes_the_crown_from_the_mask_only_when_trusted(trusted):
    import json

    from facecraft.pipeline.options import IdPhotoRequest
    from facecraft.pipeline.stages import compose_stage

    out = compose_stage(_compose_inputs(IdPhotoRequest("us_passport", "4x6")), mask_trusted=trusted)
    report = json.loads(out["COMPLIANCE"][0])
    checks = report["checks"]
    assert checks["crown_source"]["value"] == ("mask" if trusted else "estimate")
    if trusted:  # the uniform grey background is measured
        assert checks["background_uniformity"]["passed"] is True
    else:
        assert checks["background_uniformity"]["passed"] is None
    assert report["geometry_passed"] is True
    assert Image.open(io.BytesIO(out["PRINT_SHEET"][0])).size == (1200, 1800)
    assert out["OUTPUT_SIZE"].tolist() == [600, 600]


def test_compose_stage_without_a_preset_has_empty_report_and_sheet():
    from facecraft.pipeline.options import IdPhotoRequest
    from facecraft.pipeline.stages import compose_stage

    out = compose_stage(_compose_inputs(IdPhotoRequest()))
    assert out["COMPLIANCE"][0] == b"" and out["PRINT_SHEET"][0] == b""
    assert "dpi" not in Image.open(io.BytesIO(out["JPEG"][0])).info
