"""Security helpers: API key, id/format validation, sniffing, filename sanitising, size caps."""

from __future__ import annotations

import asyncio
import io
import zlib

import numpy as np
import pytest
from fastapi import UploadFile
from PIL import Image

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.security import (
    check_api_key,
    read_upload_capped,
    sanitize_filename,
    validate_format,
    validate_image_bytes,
    validate_job_id,
)
from facecraft.pipeline.decode import sniff_format


def _encode(fmt: str, size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_api_key_not_configured_allows_everything():
    check_api_key(None, None)
    check_api_key("", "anything")


def test_api_key_mismatch_or_missing_is_401():
    for presented in (None, "", "wrong", "s3cre", "s3cret "):
        with pytest.raises(GatewayError) as info:
            check_api_key("s3cret", presented)
        assert info.value.status_code == 401
        assert info.value.error == "unauthorized"
    check_api_key("s3cret", "s3cret")


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "../etc",
        "..%2f..%2fetc",
        "/etc/passwd",
        "A" * 32,
        "0" * 31,
        "0" * 33,
        "g" * 32,
        "0" * 30 + "/.",
        "0" * 31 + "\n",
    ],
)
def test_bad_job_ids_are_rejected(job_id):
    with pytest.raises(GatewayError) as info:
        validate_job_id(job_id)
    assert info.value.error == "invalid_job_id"


def test_good_job_id_passes():
    assert validate_job_id("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_formats(fmt):
    assert validate_format(fmt) == fmt


@pytest.mark.parametrize("fmt", ["jpeg", "PNG", "json", "../png", ""])
def test_bad_formats(fmt):
    with pytest.raises(GatewayError) as info:
        validate_format(fmt)
    assert info.value.error == "invalid_format"


@pytest.mark.parametrize(
    "fmt, expected",
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("HEIF", "heif"), ("AVIF", "avif")],
)
def test_sniffing_by_content(fmt, expected):
    assert sniff_format(_encode(fmt)) == expected


@pytest.mark.parametrize("data", [b"", b"GIF89a" + b"\0" * 20, b"%PDF-1.4", b"<svg xmlns=", b"hello world"])
def test_sniffing_rejects_other_content(data):
    assert sniff_format(data) is None


def test_validate_image_bytes_errors():
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(b"", 1000)
    assert (info.value.status_code, info.value.error) == (400, "invalid_image")
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(b"GIF89a" + b"\0" * 40, 1000)
    assert (info.value.status_code, info.value.error) == (415, "unsupported_media_type")
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(_encode("PNG", (40, 30)), 40 * 30 - 1)
    assert (info.value.status_code, info.value.error) == (400, "image_too_large")
    assert validate_image_bytes(_encode("PNG", (40, 30)), 40 * 30) == "png"


def test_declared_dimensions_are_checked_without_decoding():
    # An 8x8 PNG whose header claims 30000x30000: caught from the header, nothing decoded.
    png = _encode("PNG", (8, 8))
    header = bytearray(png)
    header[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(bytes(header), 50_000_000)
    assert info.value.error == "image_too_large"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_pass_and_their_header_size_is_checked(fmt):
    data = _encode(fmt, (40, 30))
    assert validate_image_bytes(data, 40 * 30) == fmt.lower()
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(data, 40 * 30 - 1)
    assert (info.value.status_code, info.value.error) == (400, "image_too_large")


def test_avif_named_jpg_is_accepted_by_content(cases_dir):
    assert validate_image_bytes((cases_dir / "avif_named_jpg.jpg").read_bytes(), 50_000_000) == "avif"


def test_video_container_is_415():
    mp4 = (24).to_bytes(4, "big") + b"ftypisom\0\0\x02\0isomiso2" + b"\0" * 64
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(mp4, 50_000_000)
    assert (info.value.status_code, info.value.error) == (415, "unsupported_media_type")
    assert "HEIC/HEIF or AVIF" in info.value.message


def test_truncated_image_is_left_to_triton():
    jpeg = _encode("JPEG")
    assert validate_image_bytes(jpeg[:40], 1000) == "jpeg"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\me.png", "me.png"),
        ("a\x00b\nc.jpg", "abc.jpg"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("x" * 300, "x" * 128),
    ],
)
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected


def test_read_upload_capped():
    async def run(size: int, cap: int) -> bytes:
        upload = UploadFile(io.BytesIO(b"x" * size), filename="f")
        return await read_upload_capped(upload, cap)

    assert len(asyncio.run(run(3 * 1024 * 1024, 3 * 1024 * 1024))) == 3 * 1024 * 1024
    with pytest.raises(GatewayError) as info:
        asyncio.run(run(3 * 1024 * 1024 + 1, 3 * 1024 * 1024))
    assert (info.value.status_code, info.value.error) == (413, "file_too_large")


def test_a_video_sent_to_an_image_endpoint_is_named_in_the_415(tmp_path):
    from tests.fixtures.videos import write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=3, audio=None)
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(clip.read_bytes(), 1000)
    assert (info.value.status_code, info.value.error) == (415, "unsupported_media_type")
    assert info.value.message.endswith("it is a video (MP4), which this endpoint does not take")
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(b"%PDF-1.7 not an image", 1000)
    assert "video" not in info.value.message


def test_a_still_gif_is_not_called_a_video_in_the_415():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="GIF")  # one frame
    with pytest.raises(GatewayError) as info:
        validate_image_bytes(buffer.getvalue(), 1000)
    assert (info.value.status_code, info.value.error) == (415, "unsupported_media_type")
    assert "it is a GIF, taken as a video only" in info.value.message
    assert "it is a video" not in info.value.message
