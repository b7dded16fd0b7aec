"""The preset table: sizes at DPI and the published ranges (docs/presets.md)."""

from __future__ import annotations

import pytest

from facecraft.pipeline.presets import LAYOUTS, PRESETS, presets_json


@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("us_passport", (600, 600)),
        ("schengen", (413, 531)),
        ("uk_passport", (413, 531)),
        ("japan_passport", (413, 531)),
        ("australia_passport", (413, 531)),
        ("canada_passport", (591, 827)),
        ("china_visa", (390, 567)),
        ("cn_1inch", (295, 413)),
        ("cn_2inch", (413, 579)),
        ("facecraft_badge", (648, 648)),
    ],
)
def test_pixel_size_is_the_physical_size_at_the_dpi(name, pixels):
    assert PRESETS[name].pixel_size == pixels


def test_us_ranges_match_the_state_department_percentages():
    us = PRESETS["us_passport"]
    head = [100 * v / us.height_mm for v in us.head_mm]
    eye = [100 * v / us.height_mm for v in us.eye_mm]
    assert head == pytest.approx([50, 68.75]) and eye == pytest.approx([56.25, 68.75])
    assert us.max_kb == 240 and us.edited_background_accepted is False


def test_every_document_preset_has_a_head_range_background_and_rule():
    for preset in PRESETS.values():
        assert preset.backgrounds and preset.edited_background_rule and preset.source
        if preset.geometry == "head":
            low, high = preset.head_mm
            assert 0 < low < high < preset.height_mm
            assert preset.head_measure in ("top_of_hair", "skull")


def test_layout_sizes_at_300_dpi():
    assert LAYOUTS["4x6"].pixel_size == (1200, 1800)
    assert LAYOUTS["10x15"].pixel_size == (1181, 1772)
    assert LAYOUTS["a4"].pixel_size == (2480, 3508)


def test_presets_json_lists_every_preset_and_layout():
    body = presets_json()
    assert [p["name"] for p in body["presets"]] == list(PRESETS)
    assert [layout["name"] for layout in body["layouts"]] == list(LAYOUTS)
    us = body["presets"][0]
    assert us["pixel_size"] == {"width": 600, "height": 600} and us["head_height_percent"] == [50.0, 68.8]
