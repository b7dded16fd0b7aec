"""The bad-input corpus is what it claims to be (so the gateway/Triton tests test the right thing)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.reliability import corpus


@pytest.fixture(scope="module")
def cases(astronaut_rgb) -> dict[str, corpus.InputCase]:
    return {case.name: case for case in corpus.build_input_cases(astronaut_rgb)}


def test_names_are_unique_and_expectations_are_known_codes(astronaut_rgb):
    built = corpus.build_input_cases(astronaut_rgb)
    assert len({c.name for c in built}) == len(built)
    known = {None, corpus.INVALID_IMAGE, corpus.IMAGE_TOO_LARGE, corpus.NO_FACE_DETECTED}
    assert {c.triton_error for c in built} <= known
    options = corpus.build_option_cases()
    assert len({c.name for c in options}) == len(options)
    assert all(c.form is not None or c.tensors is not None for c in options)


def test_png_bombs_have_valid_crcs_and_lying_headers(cases):
    for name, expected in [
        ("png_bomb_declared_100k", (100_000, 100_000)),
        ("png_declared_20000", (20_000, 20_000)),
        ("png_bomb_full_stream", (8_000, 8_000)),
    ]:
        data = cases[name].data
        assert corpus.png_declared_size(data) == expected
        assert len(data) < 200_000, "a bomb must be a small file"
        width, height = expected
        assert width * height > corpus.MAX_INPUT_PIXELS


def test_full_stream_bomb_really_inflates_to_the_declared_size(cases):
    data = cases["png_bomb_full_stream"].data
    idat_length = int.from_bytes(data[33:37], "big")
    assert data[37:41] == b"IDAT"
    inflater = zlib.decompressobj()
    inflated = 0
    stream = data[41 : 41 + idat_length]
    for start in range(0, len(stream), 4096):
        inflated += len(inflater.decompress(stream[start : start + 4096], 1 << 20))
        while inflater.unconsumed_tail:
            inflated += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
    assert inflater.eof
    assert inflated == 8_000 * (8_000 + 1)


def test_pillow_refuses_the_declared_bomb_without_inflating(cases):
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(cases["png_bomb_declared_100k"].data)).load()


def test_jpeg_declared_size_is_patched(cases):
    assert corpus.jpeg_declared_size(cases["jpeg_declared_20000"].data) == (20_000, 20_000)


def test_exif_rotated_jpeg_displays_upright(cases, astronaut_rgb):
    image = Image.open(io.BytesIO(cases["exif_rotated_jpeg"].data))
    assert image.getexif()[0x0112] == 6
    upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.int16)
    stored = np.asarray(image.convert("RGB"), dtype=np.int16)
    # Upright matches the source; the stored pixels do not (they are rotated).
    assert np.abs(upright - astronaut_rgb).mean() < 6
    assert np.abs(stored - astronaut_rgb).mean() > 30


def test_format_cases_are_what_they_claim(cases):
    assert Image.open(io.BytesIO(cases["cmyk_jpeg"].data)).mode == "CMYK"
    deep = Image.open(io.BytesIO(cases["sixteen_bit_png"].data))
    assert deep.format == "PNG" and cases["sixteen_bit_png"].data[24] == 16  # IHDR bit depth
    gif = Image.open(io.BytesIO(cases["animated_gif"].data))
    assert gif.format == "GIF" and gif.n_frames == 3
    webp = Image.open(io.BytesIO(cases["animated_webp"].data))
    assert webp.format == "WEBP" and webp.n_frames == 3
    assert Image.open(io.BytesIO(cases["rgba_png"].data)).mode == "RGBA"
    assert Image.open(io.BytesIO(cases["grayscale_jpeg"].data)).mode == "L"
    assert Image.open(io.BytesIO(cases["png_named_jpg"].data)).format == "PNG"
    assert cases["png_named_jpg"].filename.endswith(".jpg")
    assert len(cases["too_many_bytes"].data) > corpus.MAX_UPLOAD_BYTES
    Image.open(io.BytesIO(cases["too_many_bytes"].data)).load()  # still a decodable JPEG


def test_truncated_cases_do_not_decode_fully(cases):
    for name in ("truncated_jpeg", "truncated_png", "truncated_jpeg_header_only"):
        with pytest.raises(OSError):
            Image.open(io.BytesIO(cases[name].data)).load()


def test_phone_format_cases_are_what_they_claim(cases, astronaut_rgb):
    heic_major, heic_brands = corpus.ftyp_brands(cases["heic_photo"].data)
    assert heic_major == b"heic" and b"mif1" in heic_brands
    avif_major, avif_brands = corpus.ftyp_brands(cases["avif_named_jpg"].data)
    assert avif_major == b"avif" and cases["avif_named_jpg"].filename.endswith(".jpg")
    assert Image.open(io.BytesIO(cases["heic_photo"].data)).format == "HEIF"
    assert Image.open(io.BytesIO(cases["avif_named_jpg"].data)).format == "AVIF"
    for name in ("heic_declared_20000", "avif_declared_20000"):
        sizes = corpus.heif_declared_sizes(cases[name].data)
        assert sizes and set(sizes) == {(20_000, 20_000)}, sizes
    assert corpus.ftyp_brands(cases["mp4_as_heic"].data)[0] == b"isom"
    for name in ("corrupt_heic", "corrupt_avif"):
        source = cases["heic_photo" if "heic" in name else "avif_named_jpg"].data
        assert len(cases[name].data) == len(source) and cases[name].data != source


def test_exif_rotated_phone_formats_are_stored_sideways(cases, astronaut_rgb):
    for name in ("exif_rotated_heic", "exif_rotated_avif"):
        assert b"irot" in cases[name].data, f"{name}: the encoder must write the HEIF rotation too"
    # libheif applies irot itself; pillow-heif then resets EXIF to 1 and keeps the original value.
    heic = Image.open(io.BytesIO(cases["exif_rotated_heic"].data))
    assert heic.info["original_orientation"] == 6 and heic.getexif().get(0x0112, 1) == 1
    # Pillow's AVIF plugin leaves the rotation to EXIF: the stored pixels are sideways.
    avif = Image.open(io.BytesIO(cases["exif_rotated_avif"].data))
    assert avif.getexif()[0x0112] == 6
    stored = np.asarray(avif.convert("RGB"), dtype=np.int16)
    upright = np.asarray(ImageOps.exif_transpose(avif).convert("RGB"), dtype=np.int16)
    assert np.abs(upright - astronaut_rgb).mean() < 6
    assert np.abs(stored - astronaut_rgb).mean() > 30


def test_truncated_phone_format_cases_do_not_decode(cases):
    for name in ("truncated_heic", "truncated_avif"):
        with pytest.raises((OSError, ValueError, SyntaxError)):
            Image.open(io.BytesIO(cases[name].data)).load()
