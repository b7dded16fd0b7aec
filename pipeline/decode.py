"""Decode uploaded image bytes into a working HWC uint8 RGB array.

Accepted by content (magic bytes / ISO-BMFF ``ftyp`` brands), never by file name: JPEG, PNG, WebP,
BMP, HEIC/HEIF (libheif via ``pillow-heif``) and AVIF (Pillow's own plugin). EXIF orientation is
applied, alpha is composited on the background colour, grayscale / palette / CMYK / 16-bit inputs
become 8-bit RGB, and the result is downscaled so its long side is at most ``MAX_WORKING_SIDE``.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from facecraft.pipeline.errors import IMAGE_TOO_LARGE, INVALID_IMAGE, PipelineError

STEP = "decode"

MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_INPUT_PIXELS = 50_000_000
MAX_WORKING_SIDE = 2048

# What sniff_format accepts, for messages (the gateway's 415 and API docs use it too).
SUPPORTED_TYPES = "JPEG, PNG, WebP, BMP, HEIC/HEIF or AVIF"

# Sniffed type -> the only Pillow plugin allowed to open it. Pillow's own bomb guard would fire
# later and with a less specific message; ours runs first.
_PILLOW_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "heif": "HEIF",
    "avif": "AVIF",
}

# ISO-BMFF ``ftyp`` brands (ISO/IEC 23008-12 HEIF, AV1 Image File Format). The codec brands say
# what the image is; the structural brands (image item / image sequence) only say "some HEIF",
# and then the compatible brands decide.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_STRUCTURAL_BRANDS = frozenset({b"mif1", b"mif2", b"msf1", b"miaf"})
_FTYP_MAX_BYTES = 256
# An ``ispe`` property box: size 20, type, version/flags, then width and height (u32 BE).
_ISPE_BOX = b"\x00\x00\x00\x14ispe"

# The one registration of the HEIF opener (every Pillow open of an upload goes through
# open_image below). Only the primary image is read: no thumbnails, depth maps or auxiliary images.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


@dataclass(frozen=True)
class DecodedImage:
    """``rgb``: HWC uint8 RGB, long side ≤ 2048. ``original_size``: (w, h) after EXIF rotation.
    ``format``: the sniffed type ("jpeg", "png", "webp", "bmp", "heif" or "avif")."""

    rgb: np.ndarray
    original_size: tuple[int, int]
    format: str


def _ftyp_brands(data: bytes) -> tuple[bytes, frozenset[bytes]]:
    """(major brand, compatible brands) of a leading ISO-BMFF ``ftyp`` box; (b"", {}) if none."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return b"", frozenset()
    size = int.from_bytes(data[:4], "big")
    end = min(size, len(data), _FTYP_MAX_BYTES) if size >= 16 else 16
    return data[8:12], frozenset(data[i : i + 4] for i in range(16, end - 3, 4))


def sniff_format(data: bytes) -> str | None:
    """The image type from the leading bytes: "jpeg", "png", "webp", "bmp", "heif", "avif", or None.

    HEIF and AVIF are told apart by the ``ftyp`` box: a major brand ``avif``/``avis`` is AVIF, a
    HEVC brand (``heic``, ``heix``, ``hevc``, ...) is HEIF; a structural major brand (``mif1``,
    ``msf1``, ...) is AVIF when ``avif``/``avis`` is among the compatible brands, else HEIF.
    Other ISO-BMFF files (MP4/QuickTime video, ...) are None. Only the first 256 bytes are read.
    """
    major, compatible = _ftyp_brands(data)
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEVC_BRANDS:
        return "heif"
    if major in _STRUCTURAL_BRANDS:
        return "avif" if compatible & _AVIF_BRANDS else "heif"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    return None


def _largest_ispe(data: bytes) -> tuple[int, int] | None:
    """The largest (w, h) any HEIF ``ispe`` property (image spatial extents) declares, or None.

    A byte scan for the fixed 20-byte box (size 20, ``ispe``, version/flags, w, h), used only when
    the decoder refuses the container: libavif will not even parse a header above 16384x16384 px.
    """
    largest: tuple[int, int] | None = None
    index = data.find(_ISPE_BOX)
    while 0 <= index <= len(data) - 20:
        width, height = struct.unpack_from(">II", data, index + 12)
        if largest is None or width * height > largest[0] * largest[1]:
            largest = (width, height)
        index = data.find(_ISPE_BOX, index + 8)
    return largest


def _too_many_pixels(width: int, height: int, max_pixels: int) -> PipelineError:
    return PipelineError(
        IMAGE_TOO_LARGE,
        STEP,
        f"{width}x{height} = {width * height} pixels is above the {max_pixels}-pixel cap",
    )


def _describe(data: bytes) -> str:
    head = data[:16]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head.lstrip()[:1] == b"<":
        return "HTML/XML text"
    major, _ = _ftyp_brands(data)
    if major:
        brand = "".join(chr(b) if 32 <= b < 127 else "?" for b in major)
        return f"an ISO-BMFF/MP4 file of brand '{brand}', not a HEIF or AVIF image"
    return f"unrecognised data starting with {head[:8].hex()}"


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Any Pillow mode → HWC uint8 RGB; transparency is composited on ``background``."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or gray.max(initial=0) > 255 else 255.0
        gray8 = np.clip(np.rint(gray * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        return np.clip(np.rint(rgba[:, :, :3] * alpha + bg * (1.0 - alpha)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def limit_working_size(rgb: np.ndarray, max_side: int = MAX_WORKING_SIDE) -> np.ndarray:
    """Downscale (INTER_AREA) so the long side is ≤ ``max_side``; smaller images are returned as is."""
    h, w = rgb.shape[:2]
    long_side = max(h, w)
    if long_side <= max_side:
        return rgb
    scale = max_side / long_side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def open_image(data: bytes, kind: str) -> Image.Image:
    """Open encoded ``data`` lazily with the one Pillow plugin for ``kind`` (a :func:`sniff_format` type).

    Only the header is parsed: ``.size`` is the declared (w, h), after the HEIF ``irot``/``imir``
    transforms; pixels are decoded by ``.load()``. Pillow's bomb warning is silenced (callers apply
    their own pixel cap). Raises what Pillow raises: ``Image.DecompressionBombError`` above twice
    Pillow's own limit, ``OSError`` (``UnidentifiedImageError``), ``SyntaxError``, ``ValueError`` or
    ``RuntimeError`` for data it cannot parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]])


@contextlib.contextmanager
def _decoding(data: bytes, max_pixels: int):
    """Map what Pillow and the HEIF/AVIF decoders raise while decoding ``data`` to
    ``PipelineError``: ``image_too_large`` for a bomb, ``invalid_image`` (naming the sniffed type
    and the decoder's reason) for anything it cannot parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except PipelineError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow refuses headers above 2x its own limit while opening, before our check can run.
        raise PipelineError(IMAGE_TOO_LARGE, STEP, f"{error}; the cap is {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, RuntimeError, EOFError) as error:
        # libheif/libavif report bad data as ValueError/RuntimeError too, multi-line at times.
        kind = sniff_format(data)
        declared = _largest_ispe(data) if kind in ("heif", "avif") else None
        if declared is not None and declared[0] * declared[1] > max_pixels:
            raise _too_many_pixels(*declared, max_pixels) from None
        if isinstance(error, Image.UnidentifiedImageError):
            reason = "its header cannot be parsed"  # Pillow's own message names only the buffer
        else:
            reason = " ".join(str(error).split())
        raise PipelineError(INVALID_IMAGE, STEP, f"corrupt or truncated {kind} data ({reason})") from None


def _checked_open(data: bytes, max_bytes: int, max_pixels: int) -> tuple[str, Image.Image]:
    """(sniffed type, the lazily opened image) after the checks that need no pixel: empty, byte
    cap, unsupported type, declared size (raises ``PipelineError`` as :func:`decode_image`). Call
    inside :func:`_decoding`."""
    if not data:
        raise PipelineError(INVALID_IMAGE, STEP, "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PipelineError(IMAGE_TOO_LARGE, STEP, f"{len(data)} bytes is above the {max_bytes}-byte cap")
    kind = sniff_format(data)
    if kind is None:
        raise PipelineError(
            INVALID_IMAGE, STEP, f"unsupported image type ({_describe(data)}); send {SUPPORTED_TYPES}"
        )
    image = open_image(data, kind)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise PipelineError(INVALID_IMAGE, STEP, f"the {kind} header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return kind, image


def verify_image(data: bytes, max_bytes: int = MAX_INPUT_BYTES, max_pixels: int = MAX_INPUT_PIXELS) -> str:
    """Decode ``data`` once without keeping its pixels, to find a corrupt or truncated upload
    before it is queued (``POST /api/v1/jobs``); returns its sniffed type. The checks and errors of
    :func:`decode_image` (``PipelineError``: ``invalid_image``, ``image_too_large``), at a
    fraction of its cost: a JPEG is decoded at 1/8 scale (libjpeg's DCT scaling through Pillow's
    ``draft``, which still reads every entropy-coded byte, so truncation shows), the other formats
    in full; no EXIF rotation, colour conversion or resize."""
    with _decoding(data, max_pixels):
        kind, image = _checked_open(data, max_bytes, max_pixels)
        if kind == "jpeg":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    return kind


def decode_image(
    data: bytes,
    background: tuple[int, int, int] = (240, 240, 240),
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_INPUT_PIXELS,
    max_side: int = MAX_WORKING_SIDE,
) -> DecodedImage:
    """Decode ``data`` (encoded JPEG/PNG/WebP/BMP/HEIF/AVIF) into a :class:`DecodedImage`.

    Raises ``PipelineError`` with ``invalid_image`` (empty, unsupported type, corrupt/truncated)
    or ``image_too_large`` (byte size above ``max_bytes``, declared pixels above ``max_pixels`` —
    checked from the header before any pixel is decoded).
    """
    with _decoding(data, max_pixels):
        kind, image = _checked_open(data, max_bytes, max_pixels)
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image, background)
    original_size = (int(rgb.shape[1]), int(rgb.shape[0]))
    return DecodedImage(rgb=limit_working_size(rgb, max_side), original_size=original_size, format=kind)
