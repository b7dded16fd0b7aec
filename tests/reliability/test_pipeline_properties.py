"""Robustness properties of the pure pipeline functions (hypothesis).

The functional behaviour is tested by the pipeline's own unit tests; these check what must hold
for *any* input: decoding arbitrary or mutated bytes raises nothing but ``PipelineError`` (so a
Triton model can always answer with a per-request error), option parsing never lets a bad value
through, and the geometry helpers always return the exact shapes they promise.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from facecraft.pipeline import compose, decode, options
from facecraft.pipeline.errors import (
    ERROR_CODES,
    IMAGE_TOO_LARGE,
    INVALID_IMAGE,
    INVALID_OPTION,
    PipelineError,
)
from tests.reliability import corpus

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    b"BM",
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
]


def _small_photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_small_photo()).save(buffer, format=fmt)
    return buffer.getvalue()


VALID_FILES = {fmt: _encoded(fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "HEIF", "AVIF")}


def _decode_or_pipeline_error(data: bytes) -> decode.DecodedImage | None:
    """Decode; a ``PipelineError`` with a decode code is fine, anything else fails the test."""
    try:
        result = decode.decode_image(data)
    except PipelineError as error:
        assert error.code in (INVALID_IMAGE, IMAGE_TOO_LARGE), str(error)
        assert error.step == "decode"
        assert str(error).startswith(f"{error.code}: decode: ")
        return None
    rgb = result.rgb
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert max(rgb.shape[:2]) <= decode.MAX_WORKING_SIDE
    assert min(rgb.shape[:2]) >= 1
    return result


@SETTINGS
@given(st.binary(max_size=4096))
def test_decode_random_bytes_raises_only_pipeline_errors(data):
    _decode_or_pipeline_error(data)


@SETTINGS
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_decode_random_bytes_behind_a_valid_magic_raises_only_pipeline_errors(magic, tail):
    _decode_or_pipeline_error(magic + tail)


@SETTINGS
@given(
    st.sampled_from(sorted(VALID_FILES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_decode_mutated_real_files_raises_only_pipeline_errors(fmt, flips, cut):
    data = bytearray(VALID_FILES[fmt])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _decode_or_pipeline_error(bytes(data))


@SETTINGS
@given(
    st.integers(1, 2**31 - 1),
    st.integers(1, 2**31 - 1),
    st.sampled_from([0, 2, 4, 6]),
    st.sampled_from([8, 16]),
)
def test_decode_png_headers_with_any_declared_size_never_inflate(width, height, colour_type, depth):
    """Any declared size: refused from the header when above the cap, never a MemoryError."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    data = corpus.PNG_SIGNATURE + corpus.png_chunk(b"IHDR", ihdr)
    data += corpus.png_chunk(b"IDAT", b"x\x9c\x03\x00\x00\x00\x00\x01") + corpus.png_chunk(b"IEND", b"")
    assume(width * height <= 10**12)
    try:
        decode.decode_image(data)
    except PipelineError as error:
        expected = IMAGE_TOO_LARGE if width * height > decode.MAX_INPUT_PIXELS else INVALID_IMAGE
        assert error.code == expected, str(error)
    else:
        pytest.fail("a PNG with an empty IDAT must not decode")


OPTION_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-300, 300), max_size=4),
)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            name: OPTION_VALUES
            for name in (
                "width",
                "height",
                "background",
                "face_margin",
                "oval_mask",
                "max_jpeg_kb",
                "touch_up",
            )
        },
    )
)
def test_resolve_options_returns_in_range_values_or_invalid_option(kwargs):
    try:
        resolved = options.resolve_options(**kwargs)
    except PipelineError as error:
        assert error.code == INVALID_OPTION
        return
    assert options.MIN_SIDE <= resolved.width <= options.MAX_SIDE
    assert options.MIN_SIDE <= resolved.height <= options.MAX_SIDE
    assert options.MIN_MARGIN <= resolved.face_margin <= options.MAX_MARGIN
    assert options.MIN_JPEG_KB <= resolved.max_jpeg_kb <= options.MAX_JPEG_KB
    assert all(0 <= channel <= 255 for channel in resolved.background)
    assert isinstance(resolved.oval_mask, bool) and isinstance(resolved.touch_up, bool)


@SETTINGS
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=0, max_size=12))
def test_options_from_any_finite_vector_are_validated(values):
    """A tampered OPTIONS tensor between Triton steps cannot smuggle an unchecked value."""
    try:
        resolved = options.Options.from_vector(np.array(values, dtype=np.float32))
    except PipelineError as error:
        assert error.code == INVALID_OPTION
        return
    assert len(values) == options.OPTIONS_VECTOR_LENGTH
    np.testing.assert_allclose(resolved.to_vector()[[0, 1, 7]], np.rint(np.array(values)[[0, 1, 7]]))


# Regression: found by this suite (int(round(nan)) raised ValueError before validation).
@pytest.mark.parametrize("position", [0, 1, 2, 7])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_options_from_vector_refuses_non_finite_values_as_invalid_option(position, value):
    vector = options.DEFAULT_OPTIONS.to_vector()
    vector[position] = value
    with pytest.raises(PipelineError) as raised:
        options.Options.from_vector(vector)
    assert raised.value.code == INVALID_OPTION


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True) | st.none() | st.text(max_size=4) | st.booleans())
def test_resolve_fidelity_in_unit_interval_or_invalid_option(value):
    try:
        fidelity = options.resolve_fidelity(value)
    except PipelineError as error:
        assert error.code == INVALID_OPTION
        return
    assert 0.0 <= fidelity <= 1.0


@SETTINGS
@given(st.integers(1, 300), st.integers(1, 300), st.integers(64, 700), st.integers(64, 700))
def test_resize_with_padding_exact_size_centred_transparent_padding(src_w, src_h, width, height):
    image = np.full((src_h, src_w, 4), 200, np.uint8)
    out = compose.resize_with_padding(image, width, height)
    assert out.shape == (height, width, 4) and out.dtype == np.uint8
    opaque = np.argwhere(out[:, :, 3] > 0)
    assert opaque.size, "the image content must survive"
    (top, left), (bottom, right) = opaque.min(axis=0), opaque.max(axis=0)
    # Centred: equal padding on both sides of each axis, to within one pixel.
    assert abs(left - (width - 1 - right)) <= 1 and abs(top - (height - 1 - bottom)) <= 1
    # It fills one axis completely (aspect ratio kept, scaled to fit).
    assert right - left + 1 == width or bottom - top + 1 == height
    # Padding is fully transparent, never a coloured border.
    assert (out[out[:, :, 3] == 0][:, :3] == 0).all()


@SETTINGS
@given(st.floats(-500, 500), st.floats(-500, 500), st.floats(1, 800), st.floats(1, 800), st.floats(0, 2))
def test_crop_box_grows_symmetrically_around_the_face(x, y, w, h, margin):
    x0, y0, crop_w, crop_h = compose.crop_box(np.array([x, y, w, h]), margin)
    assert crop_w >= 1 and crop_h >= 1
    assert abs(crop_w - w * (1 + 2 * margin)) <= 1 and abs(crop_h - h * (1 + 2 * margin)) <= 1
    assert abs((x0 + crop_w / 2) - (x + w / 2)) <= 1 and abs((y0 + crop_h / 2) - (y + h / 2)) <= 1


@settings(max_examples=40, deadline=None)
@given(
    st.integers(20, 200),
    st.integers(20, 200),
    st.floats(-30, 30),
    st.floats(0, 2),
    st.tuples(st.floats(-50, 250), st.floats(-50, 250), st.floats(4, 120), st.floats(4, 120)),
)
def test_crop_levelled_shape_matches_crop_box_even_past_the_borders(w, h, tilt, margin, box):
    """Face boxes partly outside the image give the promised crop size, outside pixels transparent."""
    rgba = np.full((h, w, 4), 255, np.uint8)
    bx, by, bw, bh = box
    landmarks = np.zeros((68, 2), np.float32)
    slope = np.tan(np.radians(tilt))
    landmarks[36:42] = (bx + bw * 0.3, by + bh * 0.4)
    landmarks[42:48] = (bx + bw * 0.7, by + bh * 0.4 + bw * 0.4 * slope)
    crop = compose.crop_levelled(rgba, landmarks, np.array(box), margin)
    _, _, crop_w, crop_h = compose.crop_box(np.array(box), margin)
    assert crop.shape == (crop_h, crop_w, 4)


@SETTINGS
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(16, 2048))
def test_limit_working_size_caps_the_long_side_and_keeps_the_aspect(w, h, max_side):
    assume(w * h <= 4_000_000)
    rgb = np.zeros((h, w, 3), np.uint8)
    out = decode.limit_working_size(rgb, max_side)
    out_h, out_w = out.shape[:2]
    assert max(out_h, out_w) <= max_side and min(out_h, out_w) >= 1
    if max(w, h) <= max_side:
        assert (out_w, out_h) == (w, h)
    else:
        assert abs(out_w / out_h - w / h) <= (w / h) * (1 / min(out_w, out_h)) + 1e-9 + 1 / max(out_h, 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 64), st.integers(0, 2**32 - 1))
def test_jpeg_cap_is_never_exceeded_silently(max_kb, seed):
    noise = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    jpeg, cap_met = compose.encode_jpeg_capped(noise, max_kb)
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert (len(jpeg) <= max_kb * 1024) == cap_met


def _documented_codes(doc: str, heading: str) -> set[str]:
    """The codes in the first column of the table under ``heading`` in ``docs/<doc>``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    table = section.split("\n\n|", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", "|" + table, flags=re.MULTILINE))


def test_error_codes_are_the_documented_ones():
    """Every pipeline code is in docs/triton.md's errors table, and the table names no other code."""
    documented = _documented_codes("triton.md", "### Errors")
    assert {"invalid_image", "image_too_large", "invalid_option", "no_face_detected"} <= documented
    assert set(ERROR_CODES) == documented
