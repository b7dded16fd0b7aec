import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facecraft.pipeline import compose
from facecraft.pipeline.compose import (
    JPEG_QUALITIES,
    compose_portrait,
    composite_on_background,
    crop_box,
    crop_levelled,
    encode_jpeg_capped,
    encode_png,
    eye_line_angle,
    levelling_matrix,
    oval_mask,
    resize_with_padding,
    touch_up,
)
from facecraft.pipeline.detect import detect_face
from facecraft.pipeline.options import resolve_options


def synthetic_landmarks(angle_deg: float, centre=(200.0, 150.0), eye_distance=60.0) -> np.ndarray:
    """68 landmarks with eye centres ``eye_distance`` apart on a line tilted by ``angle_deg``."""
    theta = np.radians(angle_deg)
    half = np.array([np.cos(theta), np.sin(theta)]) * eye_distance / 2
    landmarks = np.tile(np.array(centre, np.float32), (68, 1))
    landmarks[36:42] = np.array(centre) - half
    landmarks[42:48] = np.array(centre) + half
    return landmarks


@pytest.mark.parametrize("angle", [-25.0, -5.0, 0.0, 12.5, 30.0])
def test_eye_line_angle_and_levelling(angle):
    landmarks = synthetic_landmarks(angle)
    assert eye_line_angle(landmarks) == pytest.approx(angle, abs=1e-4)
    matrix = levelling_matrix(landmarks)
    left, right = landmarks[36], landmarks[42]
    new_left, new_right = matrix @ [*left, 1], matrix @ [*right, 1]
    assert new_left[1] == pytest.approx(new_right[1], abs=1e-3)
    assert new_right[0] > new_left[0]
    midpoint = (left + right) / 2
    assert np.allclose(matrix @ [*midpoint, 1], midpoint, atol=1e-3)  # rotation about the eye midpoint


def test_levelling_a_rotated_astronaut(astronaut_rgb):
    # Rotate the photo by 15 degrees; detection + levelling should undo most of it.
    rotation = cv2.getRotationMatrix2D((256, 256), -15, 1.0)
    rotated = cv2.warpAffine(astronaut_rgb, rotation, (512, 512), borderMode=cv2.BORDER_REFLECT)
    landmarks = detect_face(rotated).landmarks
    assert abs(eye_line_angle(landmarks) - 15) < 5
    matrix = levelling_matrix(landmarks)
    levelled = np.c_[landmarks, np.ones(68)] @ matrix.T
    assert abs(eye_line_angle(levelled.astype(np.float32))) < 1e-3


def test_crop_box_grows_by_the_margin_on_each_side():
    assert crop_box(np.array([100, 50, 80, 40]), 0.5) == (60, 30, 160, 80)
    assert crop_box(np.array([100, 50, 80, 40]), 0.0) == (100, 50, 80, 40)


def test_crop_pads_transparent_outside_the_image():
    rgba = np.full((100, 100, 4), 255, np.uint8)
    landmarks = synthetic_landmarks(0.0, centre=(10.0, 10.0), eye_distance=10)
    crop = crop_levelled(rgba, landmarks, np.array([0, 0, 20, 20], np.float32), margin=1.0)
    assert crop.shape == (60, 60, 4)
    assert crop[0, 0, 3] == 0  # outside the source: transparent
    assert crop[40, 40, 3] == 255  # inside: opaque


def test_oval_mask_is_feathered_and_centred():
    mask = oval_mask(200, 100)
    assert mask.shape == (200, 100) and mask.dtype == np.float32
    assert mask[100, 50] == pytest.approx(1.0, abs=1e-3)
    assert mask[0, 0] < 1e-3 and mask[199, 99] < 1e-3
    edge_row = mask[100]
    assert np.any((edge_row > 0.05) & (edge_row < 0.95))  # soft, not a hard step


@settings(max_examples=40, deadline=None)
@given(
    src_h=st.integers(1, 300),
    src_w=st.integers(1, 300),
    width=st.integers(64, 400),
    height=st.integers(64, 400),
)
def test_resize_with_padding_always_gives_the_requested_size(src_h, src_w, width, height):
    image = np.full((src_h, src_w, 4), 200, np.uint8)
    out = resize_with_padding(image, width, height)
    assert out.shape == (height, width, 4)
    opaque = np.argwhere(out[:, :, 3] > 0)
    content_h = opaque[:, 0].max() - opaque[:, 0].min() + 1
    content_w = opaque[:, 1].max() - opaque[:, 1].min() + 1
    assert content_w == width or content_h == height  # fills one dimension
    # aspect kept to within rounding
    assert (
        abs(content_w / content_h - src_w / src_h)
        <= max(1 / content_h, 1 / content_w) * (src_w / src_h + 1) + 1e-6
    )


def test_resize_with_padding_is_transparent_in_the_padding():
    out = resize_with_padding(np.full((50, 100, 4), 255, np.uint8), 200, 200)
    assert out[0, 100, 3] == 0 and out[100, 100, 3] == 255
    assert out[:50].max() == 0


def test_touch_up_balances_a_colour_cast():
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(110, 20, (64, 64, 3)) * (1.15, 1.0, 0.87), 0, 255).astype(np.uint8)
    means_before = rgb.reshape(-1, 3).mean(0)
    means_after = touch_up(rgb).reshape(-1, 3).mean(0)
    assert np.ptp(means_after) < np.ptp(means_before) / 2


def test_png_is_rgba():
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 3] = 128
    image = Image.open(io.BytesIO(encode_png(rgba)))
    assert image.mode == "RGBA" and image.size == (20, 10)
    assert np.asarray(image)[0, 0, 3] == 128


def test_png_is_lossless_and_keeps_hidden_colour():
    rgba = np.random.default_rng(2).integers(0, 256, (33, 47, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0  # colour under zero alpha survives too: same pixels as Pillow's encoder wrote
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgba)))), rgba)


def _linear_jpeg_search(rgb: np.ndarray, max_kb: int) -> tuple[bytes, bool]:
    """The search before bisection: walk JPEG_QUALITIES from the top, first that fits wins."""
    image, data = Image.fromarray(rgb, "RGB"), b""
    for quality in JPEG_QUALITIES:
        data = compose.encode_jpeg(image, quality)
        if len(data) <= max_kb * 1024:
            return data, True
    return data, False


@pytest.fixture
def counted_jpeg_encodes(monkeypatch):
    qualities: list[int] = []
    encode = compose.encode_jpeg

    def counting(image, quality, dpi=None):
        qualities.append(quality)
        return encode(image, quality, dpi)

    monkeypatch.setattr(compose, "encode_jpeg", counting)
    return qualities


@pytest.mark.parametrize("max_kb", [8, 12, 16, 20, 25, 30, 40, 50, 70, 100, 10240])
def test_jpeg_search_gives_the_linear_search_bytes_with_fewer_encodes(
    astronaut_rgb, counted_jpeg_encodes, max_kb
):
    expected = _linear_jpeg_search(astronaut_rgb, max_kb)
    linear_encodes = len(counted_jpeg_encodes)
    counted_jpeg_encodes.clear()
    assert encode_jpeg_capped(astronaut_rgb, max_kb) == expected
    assert len(counted_jpeg_encodes) <= 8
    assert len(counted_jpeg_encodes) <= max(linear_encodes, 8)
    if linear_encodes <= 2:
        assert len(counted_jpeg_encodes) == linear_encodes
    if linear_encodes == 1:
        assert counted_jpeg_encodes == [95]  # the common case stays one encode


def test_jpeg_search_encodes_at_most_eight_times_where_the_walk_took_up_to_eighteen(
    astronaut_rgb, counted_jpeg_encodes
):
    counts = {}
    for max_kb in (8, 10, 14, 18, 24, 32):
        counted_jpeg_encodes.clear()
        _linear_jpeg_search(astronaut_rgb, max_kb)
        linear = len(counted_jpeg_encodes)
        counted_jpeg_encodes.clear()
        encode_jpeg_capped(astronaut_rgb, max_kb)
        counts[max_kb] = (linear, len(counted_jpeg_encodes))
    assert max(linear for linear, _ in counts.values()) >= 12, counts
    assert all(bisected <= 8 for _, bisected in counts.values()), counts
    assert sum(b for _, b in counts.values()) < sum(linear for linear, _ in counts.values()) / 2, counts


def test_composite_on_background():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgb = composite_on_background(rgba, (10, 20, 30))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[1, 1]) == (10, 20, 30)


@pytest.mark.parametrize("background", [(240, 240, 240), (0, 0, 0), (255, 255, 255), (17, 130, 251)])
def test_composite_on_background_is_the_float32_formula_for_every_alpha_and_value(background):
    # every (alpha, value) pair, in each channel: the table must give the float formula's pixels
    alpha, value = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    rgba = np.dstack([value, value[::-1], np.roll(value, 7, axis=1), alpha])
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    expected = np.clip(np.rint(rgba[:, :, :3] * a + bg * (1 - a)), 0, 255).astype(np.uint8)
    assert np.array_equal(composite_on_background(rgba, background), expected)


def test_composite_on_background_refuses_what_is_not_uint8_rgba():
    with pytest.raises(ValueError, match="uint8 RGBA"):
        composite_on_background(np.zeros((2, 2, 3), np.uint8), (0, 0, 0))
    with pytest.raises(ValueError, match="uint8 RGBA"):
        composite_on_background(np.zeros((2, 2, 4), np.float32), (0, 0, 0))


def test_jpeg_cap_met_with_falling_quality(astronaut_rgb):
    big, _ = encode_jpeg_capped(astronaut_rgb, 10240)
    capped, met = encode_jpeg_capped(astronaut_rgb, 30)
    assert met and len(capped) <= 30 * 1024 < len(big)


def test_jpeg_cap_unmet_returns_the_smallest_and_says_so():
    noise = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    data, met = encode_jpeg_capped(noise, 8)
    assert not met
    assert len(data) > 8 * 1024
    assert Image.open(io.BytesIO(data)).size == (1024, 1024)


def test_compose_portrait_end_to_end(astronaut_rgb):
    detection = detect_face(astronaut_rgb)
    seg = np.zeros((1, 320, 320), np.float32)
    seg[0, 40:, 60:260] = 1.0  # "person" region
    options = resolve_options(width=300, height=400, max_jpeg_kb=50, background=(0, 0, 255))
    portrait = compose_portrait(astronaut_rgb, seg, detection.landmarks, detection.box, options, (1024, 1024))
    png = Image.open(io.BytesIO(portrait.png))
    assert png.mode == "RGBA" and png.size == (300, 400)
    alpha = np.asarray(png)[:, :, 3]
    assert alpha[200, 150] == 255 and alpha[0, 0] == 0  # opaque face centre, transparent corner
    jpeg = Image.open(io.BytesIO(portrait.jpeg))
    assert jpeg.mode == "RGB" and jpeg.size == (300, 400)
    assert portrait.jpeg_cap_met and len(portrait.jpeg) <= 50 * 1024
    assert np.asarray(jpeg)[2, 2, 2] > 200  # blue background in the corner
    assert portrait.output_size == (300, 400)
    x, y, w, h = detection.box
    assert portrait.face_box == (round(x * 2), round(y * 2), round(w * 2), round(h * 2))


def test_rgb_and_alpha_cropped_apart_equal_one_rgba_warp(astronaut_rgb):
    detection = detect_face(astronaut_rgb)
    alpha = np.random.default_rng(3).integers(0, 256, astronaut_rgb.shape[:2], dtype=np.uint8)
    together = crop_levelled(np.dstack([astronaut_rgb, alpha]), detection.landmarks, detection.box, 0.4)
    apart = np.dstack(
        [
            crop_levelled(astronaut_rgb, detection.landmarks, detection.box, 0.4),
            crop_levelled(alpha, detection.landmarks, detection.box, 0.4),
        ]
    )
    assert np.array_equal(together, apart)
