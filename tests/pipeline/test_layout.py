"""Print sheets: copies from the sizes, exact sheet pixels, DPI and cut guides."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline.layout import GUIDE_RGB, plan_sheet, print_sheet
from facecraft.pipeline.presets import LAYOUTS, PRESETS


@pytest.mark.parametrize(
    ("preset", "layout", "copies", "size"),
    [
        ("schengen", "4x6", 8, (1800, 1200)),  # 4 × 2 of 413×531 on 1800×1200
        ("us_passport", "4x6", 6, (1200, 1800)),  # 2 × 3 of 600×600, edge to edge
        ("schengen", "a4", 36, (2480, 3508)),  # 6 × 6
        ("canada_passport", "4x6", 4, (1200, 1800)),
        ("cn_1inch", "a4", 66, (3508, 2480)),  # 11 × 6 in landscape beats 8 × 8
        ("schengen", "10x15", 8, (1772, 1181)),
    ],
)
def test_copies_as_computed_from_sizes(preset, layout, copies, size):
    plan = plan_sheet(PRESETS[preset], LAYOUTS[layout])
    assert plan.copies == copies and plan.size == size
    pw, ph = plan.photo_size
    assert size[0] // pw * (size[1] // ph) == copies
    for x, y in plan.origins:  # every copy on the sheet, none overlapping
        assert x >= 0 and x + pw <= size[0] and y >= 0 and y + ph <= size[1]
    assert len(set(plan.origins)) == copies


def test_sheet_is_exact_pixels_at_300_dpi_with_guides():
    photo = np.full((531, 413, 3), (10, 20, 30), np.uint8)
    sheet_bytes, info = print_sheet(photo, PRESETS["schengen"], LAYOUTS["4x6"])
    sheet = Image.open(io.BytesIO(sheet_bytes))
    assert sheet.size == (1800, 1200) and tuple(round(v) for v in sheet.info["dpi"]) == (300, 300)
    assert info["copies"] == 8 and info["columns"] == 4 and info["rows"] == 2
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    plan = plan_sheet(PRESETS["schengen"], LAYOUTS["4x6"])
    x, y = plan.origins[0]
    assert np.abs(pixels[y + 200, x + 200] - (10, 20, 30)).max() <= 8  # a copy
    assert np.abs(pixels[2, x - 1] - GUIDE_RGB).max() <= 12  # the cut guide in the margin
    assert np.abs(pixels[2, x - 6] - 255).max() <= 8  # white paper beside it
