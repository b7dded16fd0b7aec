"""Decode uploaded image bytes into a working HWC uint8 RGB array.

Accepted by content (magic bytes), never by file name: JPEG, PNG, WebP, BMP. EXIF orientation is
applied, alpha is composited on the background colour, grayscale / palette / CMYK / 16-bit inputs
become 8-bit RGB, and the result is downscaled so its long side is at most ``MAX_WORKING_SIDE``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from facecraft.pipeline.errors import IMAGE_TOO_LARGE, INVALID_IMAGE, PipelineError

STEP = "decode"

MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_INPUT_PIXELS = 50_000_000
MAX_WORKING_SIDE = 2048

# Pillow's own bomb guard would fire later and with a less specific message; ours runs first.
_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


@dataclass(frozen=True)
class DecodedImage:
    """``rgb``: HWC uint8 RGB, long side ≤ 2048. ``original_size``: (w, h) after EXIF rotation."""

    rgb: np.ndarray
    original_size: tuple[int, int]
    format: str


def sniff_format(data: bytes) -> str | None:
    """The image type from the leading bytes: "jpeg", "png", "webp", "bmp", or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    return None


def _describe(data: bytes) -> str:
    head = data[:16]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head.lstrip()[:1] == b"<":
        return "HTML/XML text"
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


def decode_image(
    data: bytes,
    background: tuple[int, int, int] = (240, 240, 240),
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_INPUT_PIXELS,
    max_side: int = MAX_WORKING_SIDE,
) -> DecodedImage:
    """Decode ``data`` (encoded JPEG/PNG/WebP/BMP) into a :class:`DecodedImage`.

    Raises ``PipelineError`` with ``invalid_image`` (empty, unsupported type, corrupt/truncated)
    or ``image_too_large`` (byte size above ``max_bytes``, declared pixels above ``max_pixels`` —
    checked from the header before any pixel is decoded).
    """
    if not data:
        raise PipelineError(INVALID_IMAGE, STEP, "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PipelineError(IMAGE_TOO_LARGE, STEP, f"{len(data)} bytes is above the {max_bytes}-byte cap")
    kind = sniff_format(data)
    if kind is None:
        raise PipelineError(
            INVALID_IMAGE, STEP, f"unsupported image type ({_describe(data)}); send JPEG, PNG, WebP or BMP"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]])
            width, height = image.size
            if width <= 0 or height <= 0:
                raise PipelineError(
                    INVALID_IMAGE, STEP, f"the {kind} header declares a {width}x{height} image"
                )
            if width * height > max_pixels:
                raise PipelineError(
                    IMAGE_TOO_LARGE,
                    STEP,
                    f"{width}x{height} = {width * height} pixels is above the {max_pixels}-pixel cap",
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image, background)
    except PipelineError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow refuses headers above 2x its own limit while opening, before our check can run.
        raise PipelineError(IMAGE_TOO_LARGE, STEP, f"{error}; the cap is {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise PipelineError(INVALID_IMAGE, STEP, f"corrupt or truncated {kind} data ({error})") from None
    original_size = (int(rgb.shape[1]), int(rgb.shape[0]))
    return DecodedImage(rgb=limit_working_size(rgb, max_side), original_size=original_size, format=kind)
