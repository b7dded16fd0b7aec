"""A bad-input corpus generated in code (no committed binaries).

Each :class:`InputCase` is an upload a hostile or careless caller could send: its bytes, the file
name it arrives under, the error code the Triton ensemble must answer (``None`` = must succeed),
and what the gateway must answer (HTTP status + ``error`` field). The expected outcomes follow the
documented contract (docs/triton.md "Errors", docs/gateway.md, docs/reliability.md); a case whose
outcome is "works" must produce a portrait, not merely avoid a crash.

:class:`OptionCase` covers option values out of range or of the wrong type, both as gateway form
fields (strings, as a browser sends them) and as Triton tensors.

Builders are pure functions of a face photo (HWC uint8 RGB, one frontal face), so the corpus is
reproducible and small in memory; the largest generated item is ~21 MB (the byte-cap case).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# Importing the decode step registers Pillow's HEIF opener (pillow-heif), which also encodes HEIC.
import facecraft.pipeline.decode  # noqa: F401

INVALID_IMAGE = "invalid_image"
IMAGE_TOO_LARGE = "image_too_large"
INVALID_OPTION = "invalid_option"
NO_FACE_DETECTED = "no_face_detected"
# Gateway-only codes (facecraft.gateway.errors.ERROR_CATALOGUE): the gateway sniffs the type and
# checks the byte cap itself before calling Triton; wrong form-field types are invalid_request.
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
FILE_TOO_LARGE = "file_too_large"
INVALID_REQUEST = "invalid_request"
# Rejected by Triton itself (datatype/shape check against config.pbtxt) before any model runs.
TRITON_REQUEST_CHECK = "triton_request_check"

# Documented caps (docs/triton.md: IMAGE ≤ 20 MB, ≤ 50 MP).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_INPUT_PIXELS = 50_000_000


@dataclass(frozen=True)
class InputCase:
    """One upload. ``triton_error``/``gateway_error`` are error codes, ``None`` meaning success."""

    name: str
    data: bytes = field(repr=False)
    filename: str
    content_type: str
    triton_error: str | None
    gateway_error: str | None
    why: str

    def __repr__(self) -> str:  # keeps pytest ids and failure output short
        return f"InputCase({self.name}, {len(self.data)} bytes, {self.filename!r})"


@dataclass(frozen=True)
class OptionCase:
    """An option value that must be refused with ``invalid_option`` (or a request-check error).

    ``form``: gateway form fields (string values); ``None`` when the gateway has no such field.
    ``tensors``: Triton inputs as ``name -> numpy array`` with the batch dimension; ``None`` when
    the value cannot be expressed as a tensor of the documented dtype (the gateway parses it).
    """

    name: str
    form: dict[str, str] | None
    tensors: dict[str, np.ndarray] | None
    triton_error: str
    model: str = "portrait_basic"
    # Acceptable gateway error codes: out of range → invalid_option (400); not parseable as the
    # field's type → invalid_request (422). NaN/inf parse as floats, so either code is correct.
    gateway_errors: tuple[str, ...] = (INVALID_OPTION,)


# --------------------------------------------------------------------------- encoders


def encode_image(array: np.ndarray, fmt: str, **params) -> bytes:
    """Encode an HWC uint8 RGB / HWC4 RGBA / HW gray array with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 over type + payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bomb(width: int, height: int, *, full_stream: bool) -> bytes:
    """A valid-looking 8-bit grayscale PNG declaring ``width``×``height`` pixels.

    ``full_stream=False``: the IDAT holds a few rows only (a tiny file whose header lies).
    ``full_stream=True``: the IDAT is a complete, valid zlib stream of all-zero rows — a real
    decompression bomb that inflates to ``height * (width + 1)`` bytes; built row by row so
    generating it never holds the inflated data in memory.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    row = b"\x00" * (width + 1)  # filter byte 0 + zero pixels
    compressor = zlib.compressobj(9)
    rows = height if full_stream else 4
    parts = [compressor.compress(row) for _ in range(rows)]
    parts.append(compressor.flush())
    idat = b"".join(parts)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, checking the signature and the IHDR CRC."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    length = struct.unpack(">I", data[8:12])[0]
    payload = data[16 : 16 + length]
    crc = struct.unpack(">I", data[16 + length : 20 + length])[0]
    if crc != zlib.crc32(b"IHDR" + payload):
        raise ValueError("bad IHDR CRC")
    return struct.unpack(">II", payload[:8])


def jpeg_with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Patch the first SOF0/SOF2 frame header of ``jpeg`` to declare ``width``×``height``."""
    data = bytearray(jpeg)
    index = 2
    while index < len(data) - 9:
        if data[index] != 0xFF:
            raise ValueError("marker expected")
        marker = data[index + 1]
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, index + 5, height, width)
            return bytes(data)
        index += 2 + length
    raise ValueError("no SOF marker found")


def jpeg_declared_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF0/1/2 header."""
    index = 2
    while index < len(jpeg) - 9:
        marker = jpeg[index + 1]
        length = struct.unpack(">H", jpeg[index + 2 : index + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", jpeg[index + 5 : index + 9])
            return width, height
        index += 2 + length
    raise ValueError("no SOF marker found")


def exif_rotated(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    """The photo stored rotated 90° counter-clockwise with EXIF Orientation=6 ("rotate 90° CW to
    display"): a viewer honouring EXIF shows the original upright ``rgb``. ``fmt``: JPEG, HEIF or
    AVIF (for HEIF/AVIF the encoders also write the matching ``irot`` transform, as phones do)."""
    stored = np.ascontiguousarray(np.rot90(rgb, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format=fmt, quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def heif_with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """Patch every ``ispe`` (image spatial extents) box of a HEIF/AVIF file to ``width``×``height``."""
    patched = bytearray(data)
    index = patched.find(ISPE_BOX)
    if index < 0:
        raise ValueError("no ispe box found")
    while index >= 0:
        struct.pack_into(">II", patched, index + 12, width, height)
        index = patched.find(ISPE_BOX, index + 8)
    return bytes(patched)


def heif_declared_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every ``ispe`` box, in file order."""
    sizes, index = [], data.find(ISPE_BOX)
    while index >= 0:
        sizes.append(struct.unpack_from(">II", data, index + 12))
        index = data.find(ISPE_BOX, index + 8)
    return sizes


def ftyp_brands(data: bytes) -> tuple[bytes, list[bytes]]:
    """(major brand, compatible brands) of a leading ISO-BMFF ``ftyp`` box."""
    if data[4:8] != b"ftyp":
        raise ValueError("no ftyp box")
    size = struct.unpack(">I", data[:4])[0]
    return data[8:12], [data[i : i + 4] for i in range(16, size, 4)]


def zeroed_coded_data(data: bytes) -> bytes:
    """A HEIF/AVIF with everything after the ``mdat`` box header zeroed: same length, the
    container still parses, the HEVC/AV1 decoder fails."""
    start = data.find(b"mdat") + 4
    if start < 4:
        raise ValueError("no mdat box found")
    return data[:start] + bytes(len(data) - start)


# An ISO-BMFF ``ftyp`` box of an MP4 video (brand isom), the start of any phone video.
MP4_FTYP = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 0x200) + b"isomiso2"
ISPE_BOX = struct.pack(">I", 20) + b"ispe"


def sixteen_bit_png(rgb: np.ndarray) -> bytes:
    """48-bit RGB PNG (16 bits per channel) of ``rgb`` (values scaled ×257), written by OpenCV."""
    import cv2

    deep = rgb.astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(deep[:, :, ::-1]))
    if not ok:
        raise RuntimeError("cv2 could not encode a 16-bit PNG")
    return encoded.tobytes()


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    """A CMYK JPEG (4 components) of ``rgb``."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def animated(rgb: np.ndarray, fmt: str) -> bytes:
    """A 3-frame animation (GIF or WEBP) whose first frame is ``rgb``."""
    first = Image.fromarray(rgb)
    others = [Image.fromarray(np.ascontiguousarray(rgb[::-1])), Image.fromarray(255 - rgb)]
    buffer = io.BytesIO()
    first.save(buffer, format=fmt, save_all=True, append_images=others, duration=100, loop=0)
    return buffer.getvalue()


def with_alpha(rgb: np.ndarray) -> np.ndarray:
    """RGBA: opaque in the middle, a transparent 32-px border."""
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[32:-32, 32:-32] = 255
    return np.dstack([rgb, alpha])


# --------------------------------------------------------------------------- the corpus


def build_input_cases(face_rgb: np.ndarray) -> list[InputCase]:
    """Every upload case, built from one frontal-face photo (HWC uint8 RGB, e.g. the astronaut)."""
    jpeg = encode_image(face_rgb, "JPEG", quality=92)
    png = encode_image(face_rgb, "PNG")
    heic = encode_image(face_rgb, "HEIF", quality=90)
    avif = encode_image(face_rgb, "AVIF", quality=90)
    gray = np.ascontiguousarray(face_rgb.mean(axis=2).astype(np.uint8))
    # Padding after EOI keeps the JPEG decodable; only the byte cap can refuse it.
    too_many_bytes = jpeg + b"\x00" * (MAX_UPLOAD_BYTES + 1024 - len(jpeg))

    def case(name, data, filename, content_type, triton_error, why, gateway_error="same"):
        gw = triton_error if gateway_error == "same" else gateway_error
        return InputCase(name, data, filename, content_type, triton_error, gw, why)

    return [
        case("empty_file", b"", "empty.jpg", "image/jpeg", INVALID_IMAGE, "zero bytes"),
        case(
            "truncated_jpeg",
            jpeg[: len(jpeg) // 2],
            "half.jpg",
            "image/jpeg",
            INVALID_IMAGE,
            "JPEG cut in the middle of the entropy-coded data",
        ),
        case(
            "truncated_jpeg_header_only",
            jpeg[:200],
            "head.jpg",
            "image/jpeg",
            INVALID_IMAGE,
            "only the first 200 bytes (markers, no scan)",
        ),
        case(
            "truncated_png",
            png[: len(png) // 2],
            "half.png",
            "image/png",
            INVALID_IMAGE,
            "PNG cut in the middle of IDAT",
        ),
        case(
            "png_named_jpg",
            png,
            "photo.jpg",
            "image/jpeg",
            None,
            "a valid PNG under a .jpg name: the type is sniffed from the content",
        ),
        case(
            "jpeg_named_txt",
            jpeg,
            "notes.txt",
            "text/plain",
            None,
            "a valid JPEG with a text name and content type: content wins",
        ),
        case(
            "text_as_jpg",
            b"just some text, definitely not an image\n" * 20,
            "photo.jpg",
            "image/jpeg",
            INVALID_IMAGE,
            "plain text disguised as a JPEG",
            gateway_error=UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "html_as_png",
            b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
            "photo.png",
            "image/png",
            INVALID_IMAGE,
            "HTML disguised as a PNG",
            gateway_error=UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "svg_as_png",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            "x.png",
            "image/png",
            INVALID_IMAGE,
            "SVG is not a supported type",
            gateway_error=UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "png_bomb_declared_100k",
            png_bomb(100_000, 100_000, full_stream=False),
            "bomb.png",
            "image/png",
            IMAGE_TOO_LARGE,
            "IHDR declares 100000x100000 (10 GP) in a tiny file",
        ),
        case(
            "png_bomb_full_stream",
            png_bomb(8_000, 8_000, full_stream=True),
            "bomb2.png",
            "image/png",
            IMAGE_TOO_LARGE,
            "complete zlib stream inflating to 64 MP (cap 50 MP)",
        ),
        case(
            "png_declared_20000",
            png_bomb(20_000, 20_000, full_stream=False),
            "big.png",
            "image/png",
            IMAGE_TOO_LARGE,
            "PNG header declaring 20000x20000",
        ),
        case(
            "jpeg_declared_20000",
            jpeg_with_declared_size(jpeg, 20_000, 20_000),
            "big.jpg",
            "image/jpeg",
            IMAGE_TOO_LARGE,
            "JPEG SOF declaring 20000x20000",
        ),
        case(
            "too_many_bytes",
            too_many_bytes,
            "huge.jpg",
            "image/jpeg",
            IMAGE_TOO_LARGE,
            "a valid JPEG padded past the 20 MB byte cap",
            gateway_error=FILE_TOO_LARGE,
        ),
        case(
            "one_by_one_png",
            encode_image(np.full((1, 1, 3), 128, np.uint8), "PNG"),
            "dot.png",
            "image/png",
            NO_FACE_DETECTED,
            "a 1x1 image decodes but has no face",
        ),
        case("cmyk_jpeg", cmyk_jpeg(face_rgb), "cmyk.jpg", "image/jpeg", None, "CMYK JPEG: converted to RGB"),
        case(
            "sixteen_bit_png",
            sixteen_bit_png(face_rgb),
            "deep.png",
            "image/png",
            None,
            "48-bit RGB PNG: reduced to 8 bits per channel",
        ),
        case(
            "animated_gif",
            animated(face_rgb, "GIF"),
            "anim.gif",
            "image/gif",
            INVALID_IMAGE,
            "GIF is not a supported type",
            gateway_error=UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "animated_webp",
            animated(face_rgb, "WEBP"),
            "anim.webp",
            "image/webp",
            None,
            "animated WebP: the first frame is used",
        ),
        case(
            "exif_rotated_jpeg",
            exif_rotated(face_rgb),
            "rotated.jpg",
            "image/jpeg",
            None,
            "stored sideways with EXIF Orientation=6: the face is found upright",
        ),
        case(
            "grayscale_jpeg",
            encode_image(gray, "JPEG", quality=92),
            "gray.jpg",
            "image/jpeg",
            None,
            "single-channel JPEG",
        ),
        case(
            "rgba_png",
            encode_image(with_alpha(face_rgb), "PNG"),
            "alpha.png",
            "image/png",
            None,
            "RGBA PNG: alpha composited on the background",
        ),
        case("bmp", encode_image(face_rgb, "BMP"), "photo.bmp", "image/bmp", None, "BMP is supported"),
        case("heic_photo", heic, "IMG_0001.HEIC", "image/heic", None, "HEIC (iPhone default) is supported"),
        case(
            "avif_named_jpg",
            avif,
            "photo.jpg",
            "image/jpeg",
            None,
            "an AVIF under a .jpg name (as messengers save them): sniffed by its ftyp brand",
        ),
        case(
            "exif_rotated_heic",
            exif_rotated(face_rgb, "HEIF"),
            "rotated.heic",
            "image/heic",
            None,
            "HEIC stored sideways (irot + EXIF Orientation=6): rotated once, not twice",
        ),
        case(
            "exif_rotated_avif",
            exif_rotated(face_rgb, "AVIF"),
            "rotated.avif",
            "image/avif",
            None,
            "AVIF stored sideways (irot + EXIF Orientation=6): the face is found upright",
        ),
        case(
            "truncated_heic",
            heic[: len(heic) // 2],
            "half.heic",
            "image/heic",
            INVALID_IMAGE,
            "HEIC cut in the middle of the coded data (libheif: extent outside the file)",
        ),
        case(
            "truncated_avif",
            avif[: len(avif) // 2],
            "half.avif",
            "image/avif",
            INVALID_IMAGE,
            "AVIF cut in the middle of the coded data (libavif cannot parse it)",
        ),
        case(
            "corrupt_heic",
            zeroed_coded_data(heic),
            "zeros.heic",
            "image/heic",
            INVALID_IMAGE,
            "HEIC whose HEVC data is zeros (libde265 fails)",
        ),
        case(
            "corrupt_avif",
            zeroed_coded_data(avif),
            "zeros.avif",
            "image/avif",
            INVALID_IMAGE,
            "AVIF whose AV1 data is zeros (dav1d fails: a RuntimeError from Pillow)",
        ),
        case(
            "heic_declared_20000",
            heif_with_declared_size(heic, 20_000, 20_000),
            "big.heic",
            "image/heic",
            IMAGE_TOO_LARGE,
            "HEIC ispe declaring 20000x20000",
        ),
        case(
            "avif_declared_20000",
            heif_with_declared_size(avif, 20_000, 20_000),
            "big.avif",
            "image/avif",
            IMAGE_TOO_LARGE,
            "AVIF ispe declaring 20000x20000 (above libavif's own parse limit too)",
        ),
        case(
            "mp4_as_heic",
            MP4_FTYP + b"\x00\x00\x00\x08free" + b"\x00" * 64,
            "IMG_0002.HEIC",
            "image/heic",
            INVALID_IMAGE,
            "an MP4 video (ftyp isom) under a .HEIC name: ISO-BMFF but not an image",
            gateway_error=UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "filename_traversal",
            jpeg,
            "../../../../tmp/facecraft-escape.jpg",
            "image/jpeg",
            None,
            "path traversal in the upload name must not choose where files go",
        ),
        case("filename_nul", jpeg, "evil\x00.jpg", "image/jpeg", None, "NUL byte in the upload name"),
        case("filename_unicode", jpeg, "портрет 😀 ﬁle.jpg", "image/jpeg", None, "non-ASCII upload name"),
    ]


def _i32(value: int) -> np.ndarray:
    return np.array([[value]], dtype=np.int32)


def _f32(value: float) -> np.ndarray:
    return np.array([[value]], dtype=np.float32)


def build_option_cases() -> list[OptionCase]:
    """Option values out of range or of the wrong type (documented ranges: docs/triton.md)."""
    c = OptionCase
    either = (INVALID_OPTION, INVALID_REQUEST)
    wrong_type = (INVALID_REQUEST,)
    return [
        c("width_too_small", {"width": "10"}, {"WIDTH": _i32(10)}, INVALID_OPTION),
        c("width_too_large", {"width": "99999"}, {"WIDTH": _i32(99_999)}, INVALID_OPTION),
        c("height_negative", {"height": "-648"}, {"HEIGHT": _i32(-648)}, INVALID_OPTION),
        c("face_margin_negative", {"face_margin": "-0.5"}, {"FACE_MARGIN": _f32(-0.5)}, INVALID_OPTION),
        c("face_margin_too_large", {"face_margin": "7"}, {"FACE_MARGIN": _f32(7.0)}, INVALID_OPTION),
        c(
            "face_margin_nan",
            {"face_margin": "nan"},
            {"FACE_MARGIN": _f32(float("nan"))},
            INVALID_OPTION,
            gateway_errors=either,
        ),
        c(
            "face_margin_inf",
            {"face_margin": "inf"},
            {"FACE_MARGIN": _f32(float("inf"))},
            INVALID_OPTION,
            gateway_errors=either,
        ),
        c(
            "fidelity_too_large",
            {"enhance_face": "true", "enhance_fidelity": "1.5"},
            {"FIDELITY": _f32(1.5)},
            INVALID_OPTION,
            model="portrait",
        ),
        c(
            "fidelity_negative",
            {"enhance_face": "true", "enhance_fidelity": "-0.1"},
            {"FIDELITY": _f32(-0.1)},
            INVALID_OPTION,
            model="portrait",
        ),
        c("max_jpeg_kb_too_small", None, {"MAX_JPEG_KB": _i32(1)}, INVALID_OPTION),
        c("background_out_of_range", {"background_r": "300"}, None, INVALID_OPTION),
        c("width_not_a_number", {"width": "wide"}, None, INVALID_OPTION, gateway_errors=wrong_type),
        c("width_fractional", {"width": "64.5"}, None, INVALID_OPTION, gateway_errors=wrong_type),
        c(
            "oval_mask_not_a_bool",
            {"use_oval_mask": "maybe"},
            None,
            INVALID_OPTION,
            gateway_errors=wrong_type,
        ),
        c(
            "face_margin_not_a_number",
            {"face_margin": "wide"},
            None,
            INVALID_OPTION,
            gateway_errors=wrong_type,
        ),
        # Wrong dtype / shape: Triton's own request check refuses them before any model runs.
        c("width_wrong_dtype", None, {"WIDTH": np.array([[648.0]], np.float32)}, TRITON_REQUEST_CHECK),
        c("background_wrong_shape", None, {"BACKGROUND": np.array([[1, 2]], np.uint8)}, TRITON_REQUEST_CHECK),
        c("oval_mask_wrong_dtype", None, {"OVAL_MASK": np.array([[3]], np.int32)}, TRITON_REQUEST_CHECK),
    ]
