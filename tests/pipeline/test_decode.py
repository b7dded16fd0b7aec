import io
import zlib

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline.decode import MAX_WORKING_SIDE, decode_image, limit_working_size, sniff_format
from facecraft.pipeline.errors import PipelineError
from tests.fixtures.images import encode


def gradient(height=60, width=80) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("fmt", "kind"), [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")]
)
def test_each_supported_format_decodes_to_rgb(fmt, kind):
    rgb = gradient()
    params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    decoded = decode_image(encode(rgb, fmt, **params))
    assert decoded.format == kind
    assert decoded.rgb.shape == (60, 80, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.original_size == (80, 60)
    tolerance = 0 if fmt in ("PNG", "BMP") else 12
    assert np.abs(decoded.rgb.astype(int) - rgb).mean() <= tolerance


def test_astronaut_jpeg(astronaut_jpeg, astronaut_rgb):
    decoded = decode_image(astronaut_jpeg)
    assert decoded.rgb.shape == astronaut_rgb.shape
    assert np.abs(decoded.rgb.astype(int) - astronaut_rgb).mean() < 4


def test_exif_orientation_is_applied():
    rgb = gradient(60, 80)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.rgb.shape == (80, 60, 3)
    assert decoded.original_size == (60, 80)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(decoded.rgb.astype(int) - expected).mean() < 12


def test_alpha_is_composited_on_the_background():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    decoded = decode_image(encode(rgba, "PNG"), background=(10, 20, 30))
    assert tuple(decoded.rgb[5, 2]) == (255, 0, 0)
    assert tuple(decoded.rgb[5, 25]) == (10, 20, 30)


def test_grayscale_becomes_rgb():
    gray = gradient()[:, :, 0]
    decoded = decode_image(encode(gray, "PNG"))
    assert decoded.rgb.shape == (60, 80, 3)
    assert np.array_equal(decoded.rgb[:, :, 0], gray) and np.array_equal(decoded.rgb[:, :, 2], gray)


def test_16_bit_grayscale_png_is_scaled_to_8_bit():
    gray16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray16).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.rgb.dtype == np.uint8
    assert decoded.rgb[0, 0, 0] == 0 and decoded.rgb[-1, -1, 0] == 255
    assert abs(int(decoded.rgb[20, 25, 1]) - 128) < 4


def test_cmyk_jpeg_becomes_rgb():
    rgb = np.zeros((30, 30, 3), np.uint8)
    rgb[:] = (200, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=95)
    decoded = decode_image(buffer.getvalue())
    assert decoded.rgb.shape == (30, 30, 3)
    assert np.abs(decoded.rgb[15, 15].astype(int) - (200, 40, 40)).max() < 20


def test_palette_png_with_transparency():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    decoded = decode_image(buffer.getvalue(), background=(1, 2, 3))
    assert tuple(decoded.rgb[0, 0]) == (1, 2, 3)


def test_working_resolution_is_capped_but_original_size_reported():
    big = np.zeros((1000, 3000, 3), np.uint8)
    decoded = decode_image(encode(big, "PNG"), max_side=1024)
    assert decoded.rgb.shape == (341, 1024, 3)
    assert decoded.original_size == (3000, 1000)
    assert max(limit_working_size(np.zeros((4000, 10, 3), np.uint8)).shape) == MAX_WORKING_SIDE


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 40, "GIF"),
        (b"II*\x00" + b"\0" * 40, "TIFF"),
        (b"<!DOCTYPE html><html></html>", "HTML"),
        (b"just some text", "unsupported image type"),
    ],
)
def test_unsupported_content_is_rejected(data, fragment):
    with pytest.raises(PipelineError) as caught:
        decode_image(data)
    assert caught.value.code == "invalid_image" and caught.value.step == "decode"
    assert fragment in str(caught.value)


def test_real_gif_is_rejected_even_if_named_jpg():
    with pytest.raises(PipelineError, match="invalid_image: decode: .*GIF"):
        decode_image(encode(gradient(), "GIF"))


def test_truncated_jpeg_is_invalid_image(astronaut_jpeg):
    with pytest.raises(PipelineError, match="invalid_image: decode: corrupt or truncated jpeg"):
        decode_image(astronaut_jpeg[: len(astronaut_jpeg) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    # A tiny PNG whose header declares 20000 x 20000 pixels (400 MP).
    header = bytearray(encode(np.zeros((1, 1), np.uint8), "PNG"))
    header[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")  # keep the IHDR CRC valid
    with pytest.raises(PipelineError) as caught:
        decode_image(bytes(header))
    assert caught.value.code == "image_too_large"
    assert "400000000 pixels" in caught.value.detail


def test_pixel_cap_is_configurable():
    with pytest.raises(PipelineError, match="image_too_large: decode: 80x60 = 4800 pixels"):
        decode_image(encode(gradient(), "PNG"), max_pixels=4000)


def test_byte_size_cap():
    with pytest.raises(PipelineError, match="image_too_large: decode: .*byte cap"):
        decode_image(b"\xff\xd8\xff" + b"\0" * 100, max_bytes=50)


def test_sniffing_is_by_content():
    assert sniff_format(encode(gradient(), "PNG")) == "png"
    assert sniff_format(b"RIFF\0\0\0\0WAVEfmt ") is None


def test_real_rgba_photo(faces_dir):
    decoded = decode_image((faces_dir / "fr__32bit.png").read_bytes())
    assert decoded.rgb.shape == (1200, 626, 3)


def test_16_bit_rgb_png_becomes_8_bit_rgb():
    import cv2

    bgr16 = np.zeros((30, 40, 3), np.uint16)
    bgr16[:, :, 2] = 65535  # red in OpenCV's BGR order
    bgr16[:, :, 1] = 32896  # ~half green
    ok, buffer = cv2.imencode(".png", bgr16)
    assert ok
    decoded = decode_image(buffer.tobytes())
    assert decoded.rgb.dtype == np.uint8
    assert np.abs(decoded.rgb[10, 10].astype(int) - (255, 128, 0)).max() <= 1
