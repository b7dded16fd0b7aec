"""Print sheets: as many copies of an ID photo as fit on 4×6 in, 10×15 cm or A4 at 300 dpi.

Copies are counted from the sizes in pixels at ``SHEET_DPI`` (``floor(sheet / photo)`` per axis,
in whichever sheet orientation holds more); the space left over is shared out evenly as the gaps
between copies and at the edges, and thin grey cut guides run along every photo edge (drawn
under the photos, so they show in the gaps and margins).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from facecraft.pipeline.presets import SHEET_DPI, Layout, Preset, mm_to_px

GUIDE_RGB = (170, 170, 170)
SHEET_RGB = (255, 255, 255)
SHEET_JPEG_QUALITY = 95


@dataclass(frozen=True)
class SheetPlan:
    """``size``: sheet (width, height) px at 300 dpi; ``photo_size``: one copy's (width, height)
    px; ``columns`` × ``rows`` copies at the top-left corners ``origins``."""

    size: tuple[int, int]
    photo_size: tuple[int, int]
    columns: int
    rows: int
    origins: tuple[tuple[int, int], ...]

    @property
    def copies(self) -> int:
        return self.columns * self.rows

    def to_json(self, layout: Layout) -> dict:
        return {
            "layout": layout.name,
            "sheet_size": list(self.size),
            "dpi": SHEET_DPI,
            "photo_size": list(self.photo_size),
            "columns": self.columns,
            "rows": self.rows,
            "copies": self.copies,
            "orientation": "portrait" if self.size[0] <= self.size[1] else "landscape",
        }


def _spread(total: int, item: int, count: int) -> list[int]:
    """Start offsets of ``count`` items of ``item`` px spread evenly over ``total`` px."""
    gap = (total - count * item) / (count + 1)
    return [round(gap + i * (item + gap)) for i in range(count)]


def plan_sheet(preset: Preset, layout: Layout) -> SheetPlan:
    """How ``preset``'s photos tile ``layout`` (both at 300 dpi); 0 copies when one does not fit."""
    photo = (mm_to_px(preset.width_mm, SHEET_DPI), mm_to_px(preset.height_mm, SHEET_DPI))
    portrait = layout.pixel_size
    best = None
    for size in (portrait, (portrait[1], portrait[0])):
        columns, rows = size[0] // photo[0], size[1] // photo[1]
        if best is None or columns * rows > best[1] * best[2]:
            best = (size, columns, rows)
    size, columns, rows = best
    origins = tuple(
        (x, y) for y in _spread(size[1], photo[1], rows) for x in _spread(size[0], photo[0], columns)
    )
    return SheetPlan(size, photo, columns, rows, origins)


def render_sheet(photo_rgb: np.ndarray, plan: SheetPlan) -> np.ndarray:
    """The sheet as HWC uint8 RGB: white, cut guides (1 px at 300 dpi), the copies pasted on top."""
    width, height = plan.size
    sheet = np.full((height, width, 3), SHEET_RGB, np.uint8)
    pw, ph = plan.photo_size
    copy = photo_rgb
    if photo_rgb.shape[1] != pw or photo_rgb.shape[0] != ph:
        copy = cv2.resize(photo_rgb, (pw, ph), interpolation=cv2.INTER_AREA)
    for x, y in plan.origins:
        for gx in (x - 1, x + pw):
            if 0 <= gx < width:
                sheet[:, gx] = GUIDE_RGB
        for gy in (y - 1, y + ph):
            if 0 <= gy < height:
                sheet[gy, :] = GUIDE_RGB
    for x, y in plan.origins:
        sheet[y : y + ph, x : x + pw] = copy
    return sheet


def print_sheet(photo_rgb: np.ndarray, preset: Preset, layout: Layout) -> tuple[bytes, dict]:
    """(JPEG bytes at 300 dpi JFIF density, the plan as JSON) for HWC uint8 RGB ``photo_rgb``."""
    plan = plan_sheet(preset, layout)
    buffer = io.BytesIO()
    Image.fromarray(render_sheet(photo_rgb, plan), "RGB").save(
        buffer, format="JPEG", quality=SHEET_JPEG_QUALITY, dpi=(SHEET_DPI, SHEET_DPI)
    )
    return buffer.getvalue(), plan.to_json(layout)
