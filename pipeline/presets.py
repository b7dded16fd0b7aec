"""ID-photo presets and print-sheet layouts: one table, served by ``GET /api/v1/presets``.

Every number is the issuing authority's published rule where one exists (docs/presets.md names the
source of each row and what was checked); a range marked ``facecraft`` in ``rule_sources`` is our
own choice where the authority states none (e.g. an eye line for a document that only fixes the
head height). Lengths are millimetres on the printed photo, chin to crown for the head height,
from the photo's bottom edge for the eye line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MM_PER_INCH = 25.4
SHEET_DPI = 300

WHITE = (255, 255, 255)
OFF_WHITE = (245, 245, 240)
LIGHT_GREY = (220, 220, 220)
CREAM = (245, 237, 220)
CHINESE_BLUE = (67, 142, 219)
CHINESE_RED = (255, 0, 0)
FACECRAFT_GREY = (240, 240, 240)

# Head height is measured from the chin (landmark 8) to the top of the hair, or to the crown of
# the skull (hair volume excluded) — the authorities differ (DESIGN §10.4).
TOP_OF_HAIR = "top_of_hair"
SKULL = "skull"


@dataclass(frozen=True)
class Preset:
    """One document photo.

    ``width_mm`` × ``height_mm`` printed at ``dpi`` gives ``pixel_size``; ``head_mm``: allowed head
    height (chin to crown, measured as ``head_measure``); ``eye_mm``: eye line above the bottom
    edge; ``top_margin_mm``: crown to the top edge; ``None`` where no range applies.
    ``backgrounds``: allowed colours by name, the first is the default. ``max_kb``: the upload
    limit in KiB (1024 bytes) or None. ``edited_background_accepted``: whether the authority
    accepts a replaced/edited background (None: no rule found). ``geometry``: ``head`` (place the
    head by the ranges) or ``badge`` (Facecraft's margin-and-oval crop, today's default).
    """

    name: str
    title: str
    authority: str
    width_mm: float
    height_mm: float
    head_mm: tuple[float, float] | None
    head_measure: str
    backgrounds: tuple[tuple[str, tuple[int, int, int]], ...]
    edited_background_accepted: bool | None
    edited_background_rule: str
    source: str
    dpi: int = 300
    eye_mm: tuple[float, float] | None = None
    top_margin_mm: tuple[float, float] | None = None
    max_kb: int | None = None
    # which numbers are facecraft's own choice (the rest are the authority's)
    rule_sources: dict[str, str] = field(default_factory=lambda: {"max_roll_deg": "facecraft"})
    max_roll_deg: float = 20.0
    geometry: str = "head"

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height) in pixels: the physical size at ``dpi``, rounded."""
        return mm_to_px(self.width_mm, self.dpi), mm_to_px(self.height_mm, self.dpi)

    @property
    def default_background(self) -> tuple[int, int, int]:
        return self.backgrounds[0][1]

    def to_json(self) -> dict:
        """The row as served by ``GET /api/v1/presets``."""
        width, height = self.pixel_size
        return {
            "name": self.name,
            "title": self.title,
            "authority": self.authority,
            "size_mm": {"width": self.width_mm, "height": self.height_mm},
            "dpi": self.dpi,
            "pixel_size": {"width": width, "height": height},
            "head_height_mm": list(self.head_mm) if self.head_mm else None,
            "head_height_percent": [round(100 * v / self.height_mm, 1) for v in self.head_mm]
            if self.head_mm
            else None,
            "head_measured_to": self.head_measure,
            "eye_line_mm_from_bottom": list(self.eye_mm) if self.eye_mm else None,
            "top_margin_mm": list(self.top_margin_mm) if self.top_margin_mm else None,
            "backgrounds": [{"name": n, "rgb": list(rgb)} for n, rgb in self.backgrounds],
            "max_kb": self.max_kb,
            "edited_background_accepted": self.edited_background_accepted,
            "edited_background_rule": self.edited_background_rule,
            "max_roll_deg": self.max_roll_deg,
            "rule_sources": dict(self.rule_sources),
            "source": self.source,
            "geometry": self.geometry,
        }


@dataclass(frozen=True)
class Layout:
    """A print sheet: ``width_mm`` × ``height_mm`` (portrait orientation) at ``SHEET_DPI``."""

    name: str
    title: str
    width_mm: float
    height_mm: float

    @property
    def pixel_size(self) -> tuple[int, int]:
        return mm_to_px(self.width_mm, SHEET_DPI), mm_to_px(self.height_mm, SHEET_DPI)

    def to_json(self) -> dict:
        width, height = self.pixel_size
        return {
            "name": self.name,
            "title": self.title,
            "size_mm": {"width": self.width_mm, "height": self.height_mm},
            "dpi": SHEET_DPI,
            "pixel_size": {"width": width, "height": height},
        }


def mm_to_px(mm: float, dpi: int) -> int:
    """Millimetres at ``dpi`` → whole pixels (rounded half up)."""
    return int(mm / MM_PER_INCH * dpi + 0.5)


def inch(value: float) -> float:
    return value * MM_PER_INCH


_NO_RETOUCH = "not accepted: photos must not be digitally altered or retouched (background included)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="us_passport",
            title="US passport / visa 2×2 in",
            authority="U.S. Department of State",
            width_mm=inch(2),
            height_mm=inch(2),
            dpi=300,  # 600×600 px, the online visa minimum (600..1200 px square)
            head_mm=(inch(1), inch(1.375)),  # 1 to 1 3/8 in = 50–69 % of the height
            head_measure=TOP_OF_HAIR,
            eye_mm=(inch(1.125), inch(1.375)),  # 1 1/8 to 1 3/8 in = 56–69 %
            backgrounds=(("white", WHITE), ("off_white", OFF_WHITE)),
            max_kb=240,  # online (DS-160) digital image ≤ 240 kB
            edited_background_accepted=False,
            edited_background_rule=_NO_RETOUCH,
            source="https://travel.state.gov/content/travel/en/us-visas/visa-information-resources/photos.html",
        ),
        Preset(
            name="schengen",
            title="Schengen / EU visa and ICAO passport 35×45 mm",
            authority="EU Visa Code (Regulation (EC) 810/2009) photo standard, ICAO Doc 9303",
            width_mm=35,
            height_mm=45,
            head_mm=(32, 36),  # 70–80 % of the height
            head_measure=SKULL,
            backgrounds=(("white", WHITE), ("light_grey", LIGHT_GREY)),
            edited_background_accepted=None,
            edited_background_rule="member states differ; several consulates refuse edited photos",
            source="https://www.icao.int/publications/Documents/9303_p3_cons_en.pdf",
        ),
        Preset(
            name="uk_passport",
            title="UK passport 35×45 mm",
            authority="HM Passport Office",
            width_mm=35,
            height_mm=45,
            head_mm=(29, 34),
            head_measure=SKULL,
            backgrounds=(("light_grey", LIGHT_GREY), ("cream", CREAM)),
            edited_background_accepted=False,
            edited_background_rule="not accepted: photos must be unaltered by computer software",
            source="https://www.gov.uk/photos-for-passports",
        ),
        Preset(
            name="canada_passport",
            title="Canada passport 50×70 mm",
            authority="IRCC / Passport Program",
            width_mm=50,
            height_mm=70,
            head_mm=(31, 36),  # chin to crown (natural top of head)
            head_measure=SKULL,
            backgrounds=(("white", WHITE), ("light_grey", LIGHT_GREY)),
            edited_background_accepted=False,
            edited_background_rule="not accepted: original photos not altered in any way",
            source="https://www.canada.ca/en/immigration-refugees-citizenship/services/canadian-passports/photos.html",
        ),
        Preset(
            name="japan_passport",
            title="Japan passport 35×45 mm",
            authority="Ministry of Foreign Affairs of Japan",
            width_mm=35,
            height_mm=45,
            head_mm=(32, 36),  # chin to the top of the head, hair included
            head_measure=TOP_OF_HAIR,
            top_margin_mm=(2, 6),  # top of the head to the top edge
            backgrounds=(("white", WHITE), ("off_white", OFF_WHITE)),
            edited_background_accepted=None,
            edited_background_rule="no published rule found on edited backgrounds; ask the issuing office",
            source="https://www.la.us.emb-japan.go.jp/e_web/e_m02_07_02.htm",
        ),
        Preset(
            name="australia_passport",
            title="Australia passport 35×45 mm",
            authority="Australian Passport Office",
            width_mm=35,
            height_mm=45,
            head_mm=(32, 36),
            head_measure=SKULL,
            backgrounds=(("white", WHITE), ("light_grey", LIGHT_GREY)),
            edited_background_accepted=False,
            edited_background_rule="not accepted: no retouching or digital alteration",
            source="https://www.passports.gov.au/getting-passport-how-it-works/photo-guidelines",
        ),
        Preset(
            name="china_visa",
            title="China passport / visa 33×48 mm",
            authority="Consular Department, Ministry of Foreign Affairs of the PRC",
            width_mm=33,
            height_mm=48,
            head_mm=(28, 33),
            head_measure=TOP_OF_HAIR,
            backgrounds=(("white", WHITE),),
            edited_background_accepted=None,
            edited_background_rule="no published rule found on edited backgrounds; the background must be white",
            source="http://www.fmcoprc.gov.hk/eng/fwxx/wgrqz/t1418248.htm",
            rule_sources={},  # 20° is the Chinese visa rule itself
        ),
        Preset(
            name="cn_1inch",
            title='Chinese "1-inch" ID photo 25×35 mm',
            authority="trade size (GA 461-2004 style: head about 2/3 of the photo height)",
            width_mm=25,
            height_mm=35,
            head_mm=(21, 25),  # ≈ 2/3 of 35 mm (23.3 mm) ± 2 mm
            head_measure=TOP_OF_HAIR,
            backgrounds=(("white", WHITE), ("blue", CHINESE_BLUE), ("red", CHINESE_RED)),
            edited_background_accepted=None,
            edited_background_rule="depends on the receiving organisation",
            source="docs/presets.md (trade size; no single issuing authority)",
            rule_sources={"head_mm": "facecraft", "max_roll_deg": "facecraft"},
        ),
        Preset(
            name="cn_2inch",
            title='Chinese "2-inch" ID photo 35×49 mm',
            authority="trade size (small 2-inch, 小二寸)",
            width_mm=35,
            height_mm=49,
            head_mm=(30, 35),  # ≈ 2/3 of 49 mm (32.7 mm) ± 2.5 mm
            head_measure=TOP_OF_HAIR,
            backgrounds=(("white", WHITE), ("blue", CHINESE_BLUE), ("red", CHINESE_RED)),
            edited_background_accepted=None,
            edited_background_rule="depends on the receiving organisation",
            source="docs/presets.md (trade size; no single issuing authority)",
            rule_sources={"head_mm": "facecraft", "max_roll_deg": "facecraft"},
        ),
        Preset(
            name="facecraft_badge",
            title="Facecraft badge 648×648 (today's default portrait)",
            authority="Facecraft",
            width_mm=648 / 300 * MM_PER_INCH,
            height_mm=648 / 300 * MM_PER_INCH,
            head_mm=None,
            head_measure=SKULL,
            backgrounds=(("facecraft_grey", FACECRAFT_GREY),),
            max_kb=200,
            edited_background_accepted=True,
            edited_background_rule="a Facecraft badge: the background is always replaced",
            source="Facecraft defaults (648×648, margin 0.3, oval mask)",
            geometry="badge",
        ),
    )
}

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("4x6", "4×6 in photo paper", inch(4), inch(6)),
        Layout("10x15", "10×15 cm photo paper", 100, 150),
        Layout("a4", "A4 paper", 210, 297),
    )
}
PRESET_NAMES = tuple(PRESETS)
LAYOUT_NAMES = tuple(LAYOUTS)

# The eye line used to place a head when the authority fixes neither the eye line nor the top
# margin: ICAO Doc 9303's example portraits put the eyes at about 60 % of the height.
DEFAULT_EYE_FRACTION = (0.55, 0.65)


def presets_json() -> dict:
    """The body of ``GET /api/v1/presets``."""
    return {
        "presets": [preset.to_json() for preset in PRESETS.values()],
        "layouts": [layout.to_json() for layout in LAYOUTS.values()],
    }
