"""Final composition: level the eye line, crop around the face, touch up, oval mask, resize with
padding, and encode the transparent PNG and the size-capped JPEG."""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from facecraft.pipeline.options import Options
from facecraft.pipeline.segment import alpha_from_map

JPEG_QUALITIES = tuple(range(95, 5, -5))  # 95, 90, …, 10: the highest that meets the size cap wins
# PNG: zlib level 1 (Pillow, adaptive filters). Chosen by `facecraft bench-steps` on the six
# benchmark portraits (648x648 RGBA): 4-6x faster than level 6 (the level before) for +16-26 %
# bytes; OpenCV's Z_RLE strategy was as fast and +3 % on noisy photos but +72-79 % on the smooth
# ones (cf__Einstein01, cf__Hepburn01); level 2 bought 2-4 % for 10 % more time
# (docs/benchmarks.md, "Python steps").
PNG_COMPRESSION = 1
OVAL_FEATHER = 0.04  # Gaussian sigma of the oval edge, as a fraction of the short side


@dataclass(frozen=True)
class Portrait:
    """``png``: RGBA PNG bytes; ``jpeg``: RGB JPEG bytes on the background; ``face_box``: (x, y, w, h)
    int in original-image pixels; ``jpeg_cap_met``: JPEG ≤ max_jpeg_kb; ``output_size``: (w, h)."""

    png: bytes
    jpeg: bytes
    face_box: tuple[int, int, int, int]
    jpeg_cap_met: bool
    output_size: tuple[int, int]


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye centres in image order: means of landmarks 36–41 and 42–47."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    return points[36:42].mean(axis=0), points[42:48].mean(axis=0)


def eye_line_angle(landmarks: np.ndarray) -> float:
    """Angle of the eye line in degrees (image coordinates, y down; positive = right eye lower)."""
    left, right = eye_centres(landmarks)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def levelling_matrix(landmarks: np.ndarray) -> np.ndarray:
    """float64 [2, 3]: rotation about the eye midpoint that makes the eye line horizontal."""
    left, right = eye_centres(landmarks)
    centre = (float((left[0] + right[0]) / 2), float((left[1] + right[1]) / 2))
    return cv2.getRotationMatrix2D(centre, eye_line_angle(landmarks), 1.0)


def crop_box(
    face_box: np.ndarray, margin: float, centre: tuple[float, float] | None = None
) -> tuple[int, int, int, int]:
    """The face box (x, y, w, h) grown by ``margin`` × its size on each side, as integer (x, y, w, h).

    ``centre`` overrides the box centre (e.g. after rotating it). The result may extend past the
    image borders; :func:`crop_levelled` pads those parts transparent.
    """
    x, y, w, h = (float(v) for v in face_box)
    cx, cy = centre if centre is not None else (x + w / 2, y + h / 2)
    crop_w, crop_h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    x0, y0 = round(cx - crop_w / 2), round(cy - crop_h / 2)
    return x0, y0, max(1, round(crop_w)), max(1, round(crop_h))


def crop_levelled(rgba: np.ndarray, landmarks: np.ndarray, face_box: np.ndarray, margin: float) -> np.ndarray:
    """Rotate an HWC (or HW) uint8 image — RGBA, RGB or a lone alpha — about the eye midpoint to
    level the eyes and crop the grown face box in one warp; pixels outside the source image come
    out 0 (fully transparent for alpha). Channels are warped independently, so warping RGB and alpha
    apart gives the same pixels as warping their RGBA stack."""
    rotation = levelling_matrix(landmarks)
    x, y, w, h = (float(v) for v in face_box)
    cx, cy = rotation @ np.array([x + w / 2, y + h / 2, 1.0])
    x0, y0, crop_w, crop_h = crop_box(face_box, margin, centre=(cx, cy))
    to_crop = rotation.copy()
    to_crop[:, 2] -= (x0, y0)
    return cv2.warpAffine(
        rgba, to_crop, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def touch_up(rgb: np.ndarray) -> np.ndarray:
    """Mild photo touch-up of HWC uint8 RGB: exposure towards mid-grey, gray-world white balance,
    unsharp mask. Gains are clamped to 0.8–1.25 so a well-exposed photo barely changes."""
    image = rgb.astype(np.float32)
    means = image.reshape(-1, 3).mean(axis=0) + 1e-6
    image *= np.clip(means.mean() / means, 0.8, 1.25)  # gray world
    luminance = float((image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean()) + 1e-6
    image *= float(np.clip((118.0 / luminance) ** 0.5, 0.8, 1.25))  # half-way towards mid-grey
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    image = image + 0.5 * (image - blurred)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def oval_mask(height: int, width: int, feather: float = OVAL_FEATHER) -> np.ndarray:
    """float32 [height, width] in [0, 1]: an ellipse inscribed in the frame with a blurred edge."""
    mask = np.zeros((height, width), np.float32)
    sigma = max(0.5, feather * min(height, width))
    inset = 1.5 * sigma  # keep the blurred edge inside the frame
    axes = (max(1, round(width / 2 - inset)), max(1, round(height / 2 - inset)))
    cv2.ellipse(mask, (width // 2, height // 2), axes, 0, 0, 360, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def resize_with_padding(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit HWC uint8 RGBA into exactly ``width``×``height`` keeping the aspect ratio; the padding is
    transparent (all channels 0), the image centred."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((height, width, image.shape[2]), dtype=image.dtype)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas


def _dpi_info(dpi: int | None) -> dict:
    return {} if dpi is None else {"dpi": (dpi, dpi)}


def encode_png(rgba: np.ndarray, dpi: int | None = None, compress_level: int = PNG_COMPRESSION) -> bytes:
    """HWC uint8 RGBA → 8-bit RGBA PNG bytes (lossless) at zlib ``compress_level`` (0–9); ``dpi``
    (pixels per inch) is written as the pHYs chunk."""
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=compress_level, **_dpi_info(dpi))
    return buffer.getvalue()


@functools.lru_cache(maxsize=16)
def _blend_tables(background: tuple[int, int, int]) -> np.ndarray:
    """uint8 [3, 256 * 256], read-only: entry ``alpha * 256 + value`` of channel c is
    ``clip(rint(value * a + background[c] * (1 - a)))`` with ``a = alpha / 255``, all in float32 —
    exactly the per-pixel formula, evaluated once for every (alpha, value) pair."""
    alpha = (np.arange(256, dtype=np.float32) / 255.0)[:, None]
    values = np.arange(256, dtype=np.uint8)[None, :]
    tables = np.stack(
        [
            np.clip(np.rint(values * alpha + np.float32(channel) * (1 - alpha)), 0, 255)
            .astype(np.uint8)
            .ravel()
            for channel in background
        ]
    )
    tables.flags.writeable = False
    return tables


def composite_on_background(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """HWC uint8 RGBA → HWC uint8 RGB over a solid ``background`` (R, G, B, each 0–255):
    ``clip(rint(rgb * a + background * (1 - a)))`` with ``a = alpha / 255`` in float32, read from
    a table of every (alpha, value) pair per channel (same pixels as the float arithmetic, ~3x
    faster on a 648x648 portrait: `facecraft bench-steps`). Raises ``ValueError`` for anything
    but HWC uint8 with 4 channels."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"compositing expects HWC uint8 RGBA, got {rgba.dtype} {rgba.shape}")
    tables = _blend_tables(tuple(int(c) for c in background))
    row = rgba[:, :, 3].astype(np.intp) * 256
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    for channel in range(3):
        out[:, :, channel] = tables[channel][row + rgba[:, :, channel]]
    return out


def encode_jpeg(image: Image.Image, quality: int, dpi: int | None = None) -> bytes:
    """JPEG bytes of a Pillow RGB image at ``quality`` (1–95, libjpeg's scale); ``dpi`` is written
    as the JFIF density (pixels per inch)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **_dpi_info(dpi))
    return buffer.getvalue()


def encode_jpeg_capped(rgb: np.ndarray, max_kb: int, dpi: int | None = None) -> tuple[bytes, bool]:
    """JPEG bytes of HWC uint8 RGB at the highest quality in ``JPEG_QUALITIES`` that fits
    ``max_kb`` × 1024 bytes. Returns (jpeg, True), or (the smallest JPEG, at the lowest quality,
    False) when even that is too big — the cap is never exceeded silently. ``dpi`` is written as
    the JFIF density (pixels per inch).

    Galloping search over ``JPEG_QUALITIES`` (JPEG size grows with quality): indices 0, 1, 3, 7,
    15, then the lowest, until one fits, then bisection between the last two — 1 encode when the
    highest quality fits, 2 when the next does, at most 8 (the linear walk it replaces took up to 18).
    """
    limit = max_kb * 1024
    image = Image.fromarray(rgb, "RGB")
    encoded: dict[int, bytes] = {}

    def fits(index: int) -> bool:
        encoded[index] = encode_jpeg(image, JPEG_QUALITIES[index], dpi)
        return len(encoded[index]) <= limit

    lowest = len(JPEG_QUALITIES) - 1
    too_big, fitting, step = -1, 0, 1  # invariant: quality[too_big] exceeds the cap (-1: none tried)
    while not fits(fitting):
        if fitting == lowest:
            return encoded[lowest], False
        too_big, fitting, step = fitting, min(lowest, fitting + step), step * 2
    while fitting - too_big > 1:  # quality[fitting] meets the cap
        middle = (too_big + fitting) // 2
        if fits(middle):
            fitting = middle
        else:
            too_big = middle
    return encoded[fitting], True


def box_in_original(
    face_box: np.ndarray, working_size: tuple[int, int], original_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A face box (x, y, w, h) in working-image pixels → int (x, y, w, h) in the original's pixels."""
    scale_x, scale_y = original_size[0] / working_size[0], original_size[1] / working_size[1]
    bx, by, bw, bh = (float(v) for v in face_box)
    return round(bx * scale_x), round(by * scale_y), round(bw * scale_x), round(bh * scale_y)


def compose_portrait(
    rgb: np.ndarray,
    seg_map: np.ndarray,
    landmarks: np.ndarray,
    face_box: np.ndarray,
    options: Options,
    original_size: tuple[int, int],
    dpi: int | None = None,
) -> Portrait:
    """The whole compose step.

    ``rgb``: HWC uint8 RGB working image (enhanced or decoded); ``seg_map``: U²-Net fused map
    [1, 320, 320] float32; ``landmarks`` [68, 2] and ``face_box`` (x, y, w, h) in ``rgb`` pixels;
    ``original_size``: (w, h) of the input image, used to report ``face_box`` in its pixels;
    ``dpi``: written into both files when given.
    """
    h, w = rgb.shape[:2]
    alpha = np.rint(alpha_from_map(seg_map, (w, h)) * 255).astype(np.uint8)
    # RGB and alpha cropped apart: no full-resolution RGBA copy (same pixels as one RGBA warp)
    crop = np.dstack(
        [
            crop_levelled(rgb, landmarks, face_box, options.face_margin),
            crop_levelled(alpha, landmarks, face_box, options.face_margin),
        ]
    )
    if options.touch_up:
        crop[:, :, :3] = touch_up(crop[:, :, :3])
    if options.oval_mask:
        oval = oval_mask(crop.shape[0], crop.shape[1])
        crop[:, :, 3] = np.rint(crop[:, :, 3].astype(np.float32) * oval).astype(np.uint8)
    portrait = resize_with_padding(crop, options.width, options.height)
    jpeg, cap_met = encode_jpeg_capped(
        composite_on_background(portrait, options.background), options.max_jpeg_kb, dpi=dpi
    )
    return Portrait(
        png=encode_png(portrait, dpi=dpi),
        jpeg=jpeg,
        face_box=box_in_original(face_box, (w, h), original_size),
        jpeg_cap_met=cap_met,
        output_size=(options.width, options.height),
    )
