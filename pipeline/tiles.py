"""Frame enhancer steps around Real-ESRGAN: pixel caps, tiling with overlap, seam blending.

An image is cut into tiles of one size (``tile``×``tile``, or the whole side when it is shorter),
``overlap`` pixels apart at least, the last row/column aligned to the image edge — one size, so
the tiles of an image reach the model as one batch. The upscaled tiles are merged by weighted
accumulation: each tile's weight ramps linearly from 0 to 1 across ``overlap`` × scale output
pixels on every side that borders another tile (1 on the image edges), and the sum is divided by
the summed weights, so overlapping tiles cross-fade and no seam shows. For ×2 the image is first
reflect-padded to even sides (the model pixel-unshuffles by 2) and the result cropped back, as
Real-ESRGAN's ``RealESRGANer.pre_process`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecraft.pipeline.errors import IMAGE_TOO_LARGE, INVALID_OPTION, PipelineError

STEP = "enhance_frame"
SCALES = (2, 4)
DEFAULT_TILE, MIN_TILE, MAX_TILE = 256, 32, 1024
DEFAULT_OVERLAP, MAX_OVERLAP_FRACTION = 16, 0.25
# Caps, so a large input is refused before memory is spent: the merge holds float32 RGB + weight
# (16 bytes) per output pixel, 268 MB at the 4096² output cap.
MAX_INPUT_PIXELS = 4_194_304  # 2048²
MAX_OUTPUT_PIXELS = 16_777_216  # 4096²: ×4 of 1024², ×2 of 2048²


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_height``×``tile_width`` at ``origins`` (y, x) over a ``height``×``width``
    image (after the ×2 padding)."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    origins: tuple[tuple[int, int], ...]


def check_frame_options(height: int, width: int, scale: int, tile: int, overlap: int) -> None:
    """Raise ``PipelineError`` (``invalid_option`` / ``image_too_large``) for bad options or an
    image whose input or output would pass the caps."""
    if scale not in SCALES:
        raise PipelineError(INVALID_OPTION, STEP, f"scale must be one of {SCALES}, got {scale}")
    if not MIN_TILE <= tile <= MAX_TILE or tile % 2:
        raise PipelineError(
            INVALID_OPTION, STEP, f"tile must be even and in {MIN_TILE}..{MAX_TILE}, got {tile}"
        )
    if not 0 <= overlap <= MAX_OVERLAP_FRACTION * tile:
        raise PipelineError(
            INVALID_OPTION,
            STEP,
            f"overlap must be in 0..{int(MAX_OVERLAP_FRACTION * tile)} for tile {tile}, got {overlap}",
        )
    pixels = height * width
    if pixels > MAX_INPUT_PIXELS:
        raise PipelineError(
            IMAGE_TOO_LARGE,
            STEP,
            f"{width}x{height} = {pixels} pixels is above the {MAX_INPUT_PIXELS}-pixel input cap",
        )
    if pixels * scale * scale > MAX_OUTPUT_PIXELS:
        raise PipelineError(
            IMAGE_TOO_LARGE,
            STEP,
            f"x{scale} of {width}x{height} would be {pixels * scale * scale} pixels, above the "
            f"{MAX_OUTPUT_PIXELS}-pixel output cap; use a smaller image or scale 2",
        )


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """The tile grid of a ``height``×``width`` image (see the module docstring)."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    origins = tuple((y, x) for y in _starts(height, tile_h, overlap) for x in _starts(width, tile_w, overlap))
    return TileGrid(height, width, tile_h, tile_w, origins)


def pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """HWC ``rgb`` reflect-padded at the bottom/right to even height and width (unchanged if so)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if not (pad_h or pad_w):
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(rgb.shape[:2]) > 1 else "edge")


def split_tiles(rgb: np.ndarray, grid: TileGrid) -> np.ndarray:
    """HWC uint8 RGB → the model batch, float32 [N, 3, tile_h, tile_w] in [0, 1]."""
    tiles = [rgb[y : y + grid.tile_height, x : x + grid.tile_width] for y, x in grid.origins]
    return np.ascontiguousarray(np.stack(tiles).astype(np.float32).transpose(0, 3, 1, 2) / 255.0)


def _ramp(length: int, ramp: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    weights = np.ones(length, np.float32)
    if ramp > 0:
        rising = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        if fade_start:
            weights[:ramp] = np.minimum(weights[:ramp], rising)
        if fade_end:
            weights[length - ramp :] = np.minimum(weights[length - ramp :], rising[::-1])
    return weights


def merge_tiles(outputs: np.ndarray, grid: TileGrid, scale: int, overlap: int) -> np.ndarray:
    """Model outputs float32 [N, 3, s·tile_h, s·tile_w] (≈ [0, 1]) → HWC uint8 RGB
    [s·height, s·width, 3] with the overlaps cross-faded. Raises ``ValueError`` on a shape that
    does not fit the grid."""
    out_th, out_tw = grid.tile_height * scale, grid.tile_width * scale
    if outputs.shape != (len(grid.origins), 3, out_th, out_tw):
        raise ValueError(
            f"tile outputs {outputs.shape} do not fit {len(grid.origins)} x [3, {out_th}, {out_tw}]"
        )
    height, width = grid.height * scale, grid.width * scale
    total = np.zeros((height, width, 3), np.float32)
    weight = np.zeros((height, width, 1), np.float32)
    ramp = overlap * scale
    for (y, x), tile in zip(grid.origins, outputs, strict=True):
        oy, ox = y * scale, x * scale
        rows = _ramp(out_th, min(ramp, out_th // 2), oy > 0, oy + out_th < height)
        cols = _ramp(out_tw, min(ramp, out_tw // 2), ox > 0, ox + out_tw < width)
        window = (rows[:, None] * cols[None, :])[:, :, None]
        total[oy : oy + out_th, ox : ox + out_tw] += tile.transpose(1, 2, 0) * window
        weight[oy : oy + out_th, ox : ox + out_tw] += window
    merged = total / np.maximum(weight, 1e-12)
    return np.clip(np.rint(merged * 255.0), 0, 255).astype(np.uint8)


def enhance_frame(
    rgb: np.ndarray, upscale, *, scale: int = 4, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP
) -> np.ndarray:
    """HWC uint8 RGB → HWC uint8 RGB exactly ``scale`` × the input size.

    ``upscale`` maps the whole tile batch (float32 [N, 3, h, w] in [0, 1]) to [N, 3, s·h, s·w] in
    one call (the Real-ESRGAN model). Raises ``PipelineError`` for bad options or an image over
    the caps (checked before any work)."""
    height, width = rgb.shape[:2]
    check_frame_options(height, width, scale, tile, overlap)
    padded = pad_to_even(rgb) if scale == 2 else rgb
    grid = plan_tiles(padded.shape[0], padded.shape[1], tile, overlap)
    merged = merge_tiles(
        np.asarray(upscale(split_tiles(padded, grid)), dtype=np.float32), grid, scale, overlap
    )
    return merged[: height * scale, : width * scale]
