import io
import zlib

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline.decode import MAX_WORKING_SIDE, decode_image, limit_working_size, sniff_format
from facecraft.pipeline.errors import PipelineError
from tests.fixtures.images import encode
from tests.reliability.corpus import heif_with_declared_size, zeroed_coded_data


def gradient(height=60, width=80) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("HEIF", "heif"), ("AVIF", "avif")],
)
def test_each_supported_format_decodes_to_rgb(fmt, kind):
    rgb = gradient()
    params = {"quality": 95} if fmt in ("JPEG", "WEBP", "HEIF", "AVIF") else {}
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


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_exif_orientation_is_applied(fmt):
    rgb = gradient(60, 80)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display (HEIF/AVIF encoders also write irot)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=95, exif=exif.tobytes())
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


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    """A leading ISO-BMFF ftyp box followed by an empty meta box header."""
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0\0\0\x08meta"


@pytest.mark.parametrize(
    ("box", "kind"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), "heif"),  # iPhone
        (ftyp(b"heix", b"mif1"), "heif"),  # 10-bit HEIC
        (ftyp(b"mif1", b"heic", b"miaf"), "heif"),  # Samsung / generic HEIF container
        (ftyp(b"msf1", b"hevc"), "heif"),  # HEVC image sequence
        (ftyp(b"hevx"), "heif"),
        (ftyp(b"avif", b"mif1", b"miaf", b"MA1B"), "avif"),
        (ftyp(b"avis", b"msf1"), "avif"),  # AVIF sequence
        (ftyp(b"mif1", b"miaf", b"avif"), "avif"),  # structural major brand, AV1 compatible
        (ftyp(b"isom", b"iso2", b"mp41"), None),  # MP4 video
        (ftyp(b"qt  "), None),  # QuickTime
        (ftyp(b"crx ", b"isom"), None),  # Canon CR3 raw
    ],
    ids=lambda value: value[8:12].decode().strip() if isinstance(value, bytes) else str(value),
)
def test_heif_and_avif_are_sniffed_by_ftyp_brand(box, kind):
    assert sniff_format(box) == kind


def test_video_container_is_named_in_the_error():
    with pytest.raises(PipelineError, match=r"invalid_image: decode: .*ISO-BMFF/MP4 file of brand 'isom'"):
        decode_image(ftyp(b"isom", b"iso2") + b"\0" * 64)


def test_avif_under_a_jpg_name_is_decoded_by_content(cases_dir, astronaut_rgb):
    # The failing input from the field: an AVIF photo saved as .jpg (415 before HEIF/AVIF support).
    decoded = decode_image((cases_dir / "avif_named_jpg.jpg").read_bytes())
    assert decoded.format == "avif" and decoded.original_size == (512, 512)
    assert decoded.rgb.shape == (512, 512, 3) and decoded.rgb.dtype == np.uint8
    assert np.abs(decoded.rgb.astype(int) - astronaut_rgb).mean() < 8


def test_heif_rgba_is_composited_and_16_bit_becomes_8_bit():
    import pillow_heif

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    for fmt in ("HEIF", "AVIF"):
        decoded = decode_image(encode(rgba, fmt, quality=100), background=(10, 20, 30))
        assert np.abs(decoded.rgb[5, 2].astype(int) - (255, 0, 0)).max() <= 3, fmt
        assert tuple(decoded.rgb[5, 25]) == (10, 20, 30), fmt
    # 10-bit HEIC (as high-dynamic-range phones write) from 16-bit RGB data.
    deep = np.zeros((40, 50, 3), np.uint16)
    deep[..., 0], deep[..., 1] = 65535, 32896
    buffer = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(50, 40), data=deep.tobytes()).save(buffer, quality=-1)
    decoded = decode_image(buffer.getvalue())
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (40, 50, 3)
    assert np.abs(decoded.rgb[10, 10].astype(int) - (255, 128, 0)).max() <= 2
    # 10-bit grayscale HEIC arrives as I;16 and is scaled like a 16-bit PNG.
    gray16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    decoded = decode_image(encode(gray16, "HEIF", quality=-1))
    assert decoded.rgb[0, 0, 0] <= 1 and decoded.rgb[-1, -1, 0] >= 254
    assert abs(int(decoded.rgb[20, 25, 1]) - 128) < 4


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_pixel_caps_come_from_the_header(fmt):
    data = encode(gradient(), fmt, quality=80)
    with pytest.raises(PipelineError, match="image_too_large: decode: 80x60 = 4800 pixels"):
        decode_image(data, max_pixels=4000)
    # A tiny file whose ispe box declares 8000x8000: above our cap, below Pillow's own limit.
    with pytest.raises(PipelineError, match="image_too_large: decode: 8000x8000 = 64000000 pixels"):
        decode_image(heif_with_declared_size(data, 8000, 8000))
    # 20000x20000: Pillow's bomb limit (HEIF) or libavif's own parse limit (AVIF) refuses it first.
    with pytest.raises(PipelineError) as caught:
        decode_image(heif_with_declared_size(data, 20_000, 20_000))
    assert caught.value.code == "image_too_large" and "400000000 pixels" in caught.value.detail


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_truncated_or_corrupt_heif_and_avif_are_invalid_image(fmt):
    data = encode(gradient(200, 300), fmt, quality=80)
    kind = fmt.lower()
    for bad in (data[: len(data) // 2], data[:40], zeroed_coded_data(data)):
        with pytest.raises(PipelineError) as caught:
            decode_image(bad)
        assert caught.value.code == "invalid_image" and caught.value.step == "decode"
        assert caught.value.detail.startswith(f"corrupt or truncated {kind} data (")
        assert "\n" not in caught.value.detail and "BytesIO" not in caught.value.detail
