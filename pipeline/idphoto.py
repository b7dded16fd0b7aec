"""ID-photo geometry and the compliance report: place the head by a preset's ranges, measure it.

The chin is dlib landmark 8. The crown (top of the head) comes from the segmentation alpha — the
top of the person straight above the eyes — when the U²-Net weights are trained; otherwise it is
estimated on the chin → eye-midpoint line, one chin–eye distance above the eyes (the eyes sit
half-way between chin and crown, the textbook proportion, DESIGN §10.4). The photo is levelled
on the eye line, scaled uniformly (never stretched) so the head height lands in the middle of the
preset's range, and placed so the eye line (or the top margin) lands in the middle of its range
with the face centred horizontally. Where the source photo ends (no headroom, no shoulders) the
output is padded with the background, and the report says which sides.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from facecraft.pipeline.compose import (
    Portrait,
    box_in_original,
    compose_portrait,
    composite_on_background,
    crop_box,
    encode_jpeg_capped,
    encode_png,
    eye_centres,
    eye_line_angle,
    levelling_matrix,
)
from facecraft.pipeline.errors import INVALID_IMAGE, PipelineError
from facecraft.pipeline.layout import print_sheet
from facecraft.pipeline.options import IdPhotoRequest, Options
from facecraft.pipeline.presets import (
    DEFAULT_EYE_FRACTION,
    LAYOUTS,
    MM_PER_INCH,
    PRESETS,
    SKULL,
    TOP_OF_HAIR,
    Preset,
)
from facecraft.pipeline.segment import alpha_from_map

CHIN = 8
JAW_LEFT, JAW_RIGHT = 0, 16
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 36, 45
ALPHA_PERSON = 0.5  # alpha above this is the person
BAND_PERSON = 0.3  # a row belongs to the head while ≥ 30 % of the band above the eyes is person
PAD_SIDE_FRACTION = 0.02  # an edge counts as padded when > 2 % of its pixels come from outside
BACKGROUND_STD_MAX = 12.0  # luminance std (0..255) of a "uniform" background (facecraft's bound)
BACKGROUND_TOLERANCE = 12  # per channel, for "the background is one of the allowed colours"
MM_TOLERANCE = 0.05


@dataclass(frozen=True)
class Placement:
    """How a source photo maps onto a preset's frame.

    ``matrix``: float64 [2, 3], source pixels → output pixels (rotation + uniform ``scale``);
    ``roll_deg``: the source's eye-line angle (removed by the rotation); ``crown_source``: ``mask``
    or ``estimate``; ``crown_clipped``: the person reaches the source's edge above the head (the
    true crown is higher than measured); ``crown_y``, ``eye_y``, ``chin_y``: output rows (px);
    ``padded_sides``: edges of the output filled from outside the source; ``padded_fraction``:
    share of output pixels so filled; ``size``: output (width, height) px.
    """

    matrix: np.ndarray
    scale: float
    roll_deg: float
    crown_source: str
    crown_clipped: bool
    crown_y: float
    eye_y: float
    chin_y: float
    face_centre_x: float
    padded_sides: tuple[str, ...]
    padded_fraction: float
    size: tuple[int, int]


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def estimate_crown_y(chin_y: float, eye_y: float) -> float:
    """Crown row of a levelled face: one chin–eye distance above the eye line."""
    return eye_y - (chin_y - eye_y)


def crown_from_alpha(
    alpha: np.ndarray, valid: np.ndarray, x_range: tuple[float, float], eye_y: float
) -> tuple[float, bool] | None:
    """The crown row in a levelled alpha ([h, w] float in [0, 1]) and whether it is clipped.

    Scans up from the eye row through the column band ``x_range`` (the outer eye corners) while at
    least ``BAND_PERSON`` of the band is person; the first row that is not is the crown. Reaching
    the image's edge (or pixels from outside the source, ``valid`` False) means the head continues
    past the photo: (that row, True). None when the eye row itself is not person (an unusable mask).
    """
    h, w = alpha.shape
    x0 = int(np.clip(np.floor(x_range[0]), 0, w - 1))
    x1 = int(np.clip(np.ceil(x_range[1]), x0 + 1, w))
    row = int(np.clip(round(eye_y), 0, h - 1))
    band = alpha[: row + 1, x0:x1] > ALPHA_PERSON
    inside = valid[: row + 1, x0:x1]
    person = band.mean(axis=1)
    if person[row] < BAND_PERSON:
        return None
    for y in range(row, -1, -1):
        if inside[y].mean() < 0.5:
            return float(y + 1), True
        if person[y] < BAND_PERSON:
            return float(y + 1), False
    return 0.0, True


def _padding(matrix: np.ndarray, source_size: tuple[int, int], size: tuple[int, int]):
    w, h = source_size
    coverage = cv2.warpAffine(np.ones((h, w), np.uint8), matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    outside = coverage == 0
    sides = tuple(
        side
        for side, edge in (
            ("top", outside[0, :]),
            ("bottom", outside[-1, :]),
            ("left", outside[:, 0]),
            ("right", outside[:, -1]),
        )
        if edge.mean() > PAD_SIDE_FRACTION
    )
    return sides, float(outside.mean())


def place_head(
    landmarks: np.ndarray,
    source_size: tuple[int, int],
    preset: Preset,
    alpha: np.ndarray | None = None,
) -> Placement:
    """The placement of a face (dlib 68 ``landmarks`` [68, 2] in source pixels, source
    ``(width, height)``) in ``preset``'s frame. ``alpha`` (float [h, w] in [0, 1], source pixels)
    is used for the crown when given (pass it only when the segmentation weights are trained);
    an unusable mask falls back to the estimate.

    Raises ``PipelineError(invalid_image, "compose", ...)`` when the landmarks put the chin at or
    above the eyes, and ``ValueError`` for a preset without a head-height range.
    """
    if preset.head_mm is None:
        raise ValueError(f"preset {preset.name!r} has no head-height range")
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    rotation = levelling_matrix(points)
    level = _apply(rotation, points)
    left, right = eye_centres(points)
    eye_y = float((left[1] + right[1]) / 2)  # the rotation centre: unchanged by levelling
    chin_y = float(level[CHIN, 1])
    if chin_y - eye_y < 1.0:
        raise PipelineError(INVALID_IMAGE, "compose", "the landmarks put the chin at or above the eyes")
    face_cx = float((level[JAW_LEFT, 0] + level[JAW_RIGHT, 0]) / 2)

    crown_source, clipped, crown_y = "estimate", False, estimate_crown_y(chin_y, eye_y)
    if alpha is not None:
        w, h = source_size
        levelled_alpha = cv2.warpAffine(np.asarray(alpha, np.float32), rotation, (w, h), borderValue=0)
        valid = cv2.warpAffine(np.ones((h, w), np.uint8), rotation, (w, h), borderValue=0) > 0
        xs = sorted((level[EYE_OUTER_LEFT, 0], level[EYE_OUTER_RIGHT, 0]))
        found = crown_from_alpha(levelled_alpha, valid, (xs[0], xs[1]), eye_y)
        if found is not None:
            crown_y, clipped = found
            crown_source = "mask"

    width, height = preset.pixel_size
    px_per_mm = preset.dpi / MM_PER_INCH
    scale = (sum(preset.head_mm) / 2 * px_per_mm) / (chin_y - crown_y)
    if preset.eye_mm is not None:
        eye_out = height - sum(preset.eye_mm) / 2 * px_per_mm
    elif preset.top_margin_mm is not None:
        eye_out = sum(preset.top_margin_mm) / 2 * px_per_mm + scale * (eye_y - crown_y)
    else:
        eye_out = height * (1 - sum(DEFAULT_EYE_FRACTION) / 2)
    matrix = rotation * scale
    matrix[:, 2] += (width / 2 - scale * face_cx, eye_out - scale * eye_y)
    sides, fraction = _padding(matrix, source_size, (width, height))
    ty = matrix[1, 2] - scale * rotation[1, 2]  # output row = scale * levelled row + ty
    return Placement(
        matrix=matrix,
        scale=float(scale),
        roll_deg=float(eye_line_angle(points)),
        crown_source=crown_source,
        crown_clipped=clipped,
        crown_y=float(scale * crown_y + ty),
        eye_y=float(scale * eye_y + ty),
        chin_y=float(scale * chin_y + ty),
        face_centre_x=width / 2,
        padded_sides=sides,
        padded_fraction=fraction,
        size=(width, height),
    )


def badge_placement(
    landmarks: np.ndarray,
    face_box: np.ndarray,
    margin: float,
    source_size: tuple[int, int],
    size: tuple[int, int],
) -> Placement:
    """The placement that :func:`facecraft.pipeline.compose.compose_portrait` applies (levelled
    crop of the face box grown by ``margin``, fitted into ``size``), for measuring a badge; the
    crown is the estimate."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    rotation = levelling_matrix(points)
    x, y, w, h = (float(v) for v in face_box)
    cx, cy = rotation @ np.array([x + w / 2, y + h / 2, 1.0])
    x0, y0, crop_w, crop_h = crop_box(face_box, margin, centre=(cx, cy))
    scale = min(size[0] / crop_w, size[1] / crop_h)
    off_x = (size[0] - max(1, min(size[0], round(crop_w * scale)))) // 2
    off_y = (size[1] - max(1, min(size[1], round(crop_h * scale)))) // 2
    matrix = rotation * scale
    matrix[:, 2] += (off_x - scale * x0, off_y - scale * y0)
    level = _apply(rotation, points)
    left, right = eye_centres(points)
    eye_y = float((left[1] + right[1]) / 2)
    chin_y = float(level[CHIN, 1])
    crown_y = estimate_crown_y(chin_y, eye_y)
    ty = matrix[1, 2] - scale * rotation[1, 2]
    sides, fraction = _padding(matrix, source_size, size)
    return Placement(
        matrix=matrix,
        scale=float(scale),
        roll_deg=float(eye_line_angle(points)),
        crown_source="estimate",
        crown_clipped=False,
        crown_y=float(scale * crown_y + ty),
        eye_y=float(scale * eye_y + ty),
        chin_y=float(scale * chin_y + ty),
        face_centre_x=float(
            scale * (level[JAW_LEFT, 0] + level[JAW_RIGHT, 0]) / 2 + matrix[0, 2] - scale * rotation[0, 2]
        ),
        padded_sides=sides,
        padded_fraction=fraction,
        size=size,
    )


def warp_rgba(rgba: np.ndarray, placement: Placement) -> np.ndarray:
    """HWC uint8 RGBA → the preset frame (uniform scale, ``INTER_AREA``-like quality via
    ``INTER_LINEAR`` on a pre-shrunk copy when scaling down a lot); outside the source: alpha 0."""
    matrix = placement.matrix.copy()
    source = rgba
    if placement.scale < 0.5:  # shrink first so linear sampling does not alias
        factor = placement.scale * 2
        h, w = rgba.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        source = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
        matrix[:, 0] *= w / size[0]
        matrix[:, 1] *= h / size[1]
    return cv2.warpAffine(
        source, matrix, placement.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _check(value, passed, rule=None, **extra) -> dict:
    return {"value": value, "passed": passed, "rule": rule, **extra}


def _within(value: float, limits: tuple[float, float] | None) -> bool | None:
    if limits is None:
        return None
    return limits[0] - MM_TOLERANCE <= value <= limits[1] + MM_TOLERANCE


def background_std(rgb: np.ndarray, alpha: np.ndarray) -> float | None:
    """Luminance std (0..255) of the source pixels the mask calls background (alpha < 0.5);
    None when fewer than 1 % of the pixels are background."""
    mask = np.asarray(alpha) < ALPHA_PERSON
    if mask.mean() < 0.01:
        return None
    luminance = np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(luminance[mask].std())


def compliance_report(
    preset: Preset,
    placement: Placement,
    *,
    face_count: int,
    jpeg_bytes: int,
    background: tuple[int, int, int],
    mask_trusted: bool,
    background_std_value: float | None = None,
) -> dict:
    """The ``compliance`` object: every check with its measured ``value``, the preset's ``range``,
    ``passed`` (True / False / None when the preset has no such rule or it was not measured) and
    ``rule`` (``authority`` or ``facecraft``); ``geometry_passed`` covers head height, eye line,
    top margin, head inside the frame, roll and face count; ``passed`` every check."""
    width, height = placement.size
    mm_per_px = MM_PER_INCH / preset.dpi
    head_px = placement.chin_y - placement.crown_y
    head_mm = head_px * mm_per_px
    eye_mm = (height - placement.eye_y) * mm_per_px
    top_mm = placement.crown_y * mm_per_px
    rules = preset.rule_sources
    checks: dict[str, dict] = {}
    head_note = f"crown from the {placement.crown_source}"
    if placement.crown_source == "estimate" and preset.head_measure == TOP_OF_HAIR:
        head_note += " (hair volume not included; the rule measures to the top of the hair)"
    if placement.crown_source == "mask" and preset.head_measure == SKULL:
        head_note += " (the mask includes hair; the rule measures to the skull, which is lower)"
    head_passed = _within(head_mm, preset.head_mm)
    if placement.crown_clipped:
        head_passed = None
        head_note += "; the head reaches the top of the source photo, so its true height is unknown"
    checks["head_height"] = _check(
        round(head_mm, 2),
        head_passed,
        rules.get("head_mm", "authority") if preset.head_mm else None,
        unit="mm",
        percent=round(100 * head_px / height, 1),
        range=list(preset.head_mm) if preset.head_mm else None,
        measured_to=preset.head_measure,
        note=head_note,
    )
    checks["eye_line"] = _check(
        round(eye_mm, 2),
        _within(eye_mm, preset.eye_mm),
        rules.get("eye_mm", "authority") if preset.eye_mm else None,
        unit="mm from bottom",
        percent=round(100 * (height - placement.eye_y) / height, 1),
        range=list(preset.eye_mm) if preset.eye_mm else None,
    )
    checks["top_margin"] = _check(
        round(top_mm, 2),
        _within(top_mm, preset.top_margin_mm),
        "authority" if preset.top_margin_mm else None,
        unit="mm",
        range=list(preset.top_margin_mm) if preset.top_margin_mm else None,
    )
    inside = placement.crown_y >= -0.5 and placement.chin_y <= height + 0.5
    # a badge crops the head by design; a document photo must show all of it
    checks["head_inside_frame"] = _check(inside, inside if preset.head_mm else None, "facecraft")
    checks["roll"] = _check(
        round(placement.roll_deg, 2),
        abs(placement.roll_deg) <= preset.max_roll_deg,
        rules.get("max_roll_deg", "authority"),
        unit="degrees",
        range=[-preset.max_roll_deg, preset.max_roll_deg],
        note="the photo was rotated so the eyes are level in the output",
    )
    checks["face_count"] = _check(
        face_count, face_count == 1, "authority", note="only the applicant may be in the photo"
    )
    checks["crown_source"] = _check(
        placement.crown_source,
        None,
        None,
        clipped=placement.crown_clipped,
        note="mask: top of the person in the segmentation; estimate: one chin–eye distance above the eyes"
        + ("" if mask_trusted else " (segmentation weights untrained, mask not used)"),
    )
    if mask_trusted and background_std_value is not None:
        checks["background_uniformity"] = _check(
            round(background_std_value, 1),
            background_std_value <= BACKGROUND_STD_MAX,
            "facecraft",
            unit="luminance std of the source background",
            range=[0, BACKGROUND_STD_MAX],
        )
    else:
        checks["background_uniformity"] = _check(
            None, None, None, note="not measured: needs trained segmentation weights"
        )
    allowed = [
        name
        for name, rgb in preset.backgrounds
        if max(abs(a - b) for a, b in zip(rgb, background, strict=True)) <= BACKGROUND_TOLERANCE
    ]
    checks["background_colour"] = _check(
        list(background),
        bool(allowed),
        "authority",
        allowed=[{"name": n, "rgb": list(rgb)} for n, rgb in preset.backgrounds],
        matches=allowed[0] if allowed else None,
    )
    limit = None if preset.max_kb is None else preset.max_kb * 1024
    checks["file_size"] = _check(
        jpeg_bytes,
        None if limit is None else jpeg_bytes <= limit,
        "authority" if limit else None,
        unit="bytes",
        limit=limit,
    )
    checks["edited_background"] = _check(
        True,
        preset.edited_background_accepted,
        "authority" if preset.edited_background_accepted is not None else None,
        accepted=preset.edited_background_accepted,
        note=f"the JPEG composites the person onto the background colour; {preset.edited_background_rule}",
    )
    checks["resolution"] = _check(
        round(placement.scale, 3),
        placement.scale <= 1.0,
        "facecraft",
        unit="output px per source px",
        note="above 1 the source face was enlarged (less detail than the preset's DPI promises)",
    )
    checks["padding"] = _check(
        bool(placement.padded_sides),
        None,
        None,
        sides=list(placement.padded_sides),
        fraction=round(placement.padded_fraction, 4),
        note="edges the source photo does not reach were filled with the background (not stretched)",
    )
    geometry = ("head_height", "eye_line", "top_margin", "head_inside_frame", "roll", "face_count")
    notes = []
    if placement.padded_sides:
        notes.append(
            f"padded with the background on the {', '.join(placement.padded_sides)} "
            f"({100 * placement.padded_fraction:.1f} % of the frame): the photo lacks headroom or shoulders there"
        )
    if placement.crown_source == "estimate":
        notes.append("the crown is estimated from the landmarks; check the head height on the result")
    if preset.edited_background_accepted is False:
        notes.append(f"{preset.authority}: edited backgrounds are {preset.edited_background_rule}")
    return {
        "preset": preset.name,
        "geometry_passed": all(checks[name]["passed"] is not False for name in geometry),
        "passed": all(check["passed"] is not False for check in checks.values()),
        "checks": checks,
        "notes": notes,
        "size_px": [width, height],
        "dpi": preset.dpi,
    }


@dataclass(frozen=True)
class IdPhoto:
    """``png`` (RGBA with pHYs), ``jpeg`` (on the background, JFIF density), ``jpeg_cap_met``,
    ``compliance`` (see :func:`compliance_report`), ``rgb`` (the composited HWC uint8 photo)."""

    png: bytes
    jpeg: bytes
    jpeg_cap_met: bool
    compliance: dict
    rgb: np.ndarray


def make_id_photo(
    rgb: np.ndarray,
    alpha: np.ndarray,
    landmarks: np.ndarray,
    preset: Preset,
    *,
    background: tuple[int, int, int],
    max_jpeg_kb: int,
    face_count: int,
    mask_trusted: bool,
) -> IdPhoto:
    """The document photo: HWC uint8 ``rgb``, ``alpha`` float [h, w] in [0, 1] (same size),
    landmarks [68, 2] → exactly ``preset.pixel_size``, DPI written, background composited."""
    h, w = rgb.shape[:2]
    placement = place_head(landmarks, (w, h), preset, alpha if mask_trusted else None)
    rgba = np.dstack([rgb, np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)])
    framed = warp_rgba(rgba, placement)
    photo = composite_on_background(framed, background)
    jpeg, cap_met = encode_jpeg_capped(photo, max_jpeg_kb, dpi=preset.dpi)
    report = _report(preset, placement, rgb, alpha, jpeg, background, face_count, mask_trusted)
    return IdPhoto(encode_png(framed, dpi=preset.dpi), jpeg, cap_met, report, photo)


def _report(preset, placement, rgb, alpha, jpeg, background, face_count, mask_trusted) -> dict:
    return compliance_report(
        preset,
        placement,
        face_count=face_count,
        jpeg_bytes=len(jpeg),
        background=background,
        mask_trusted=mask_trusted,
        background_std_value=background_std(rgb, alpha) if mask_trusted else None,
    )


def compose_preset(
    rgb: np.ndarray,
    seg_map: np.ndarray,
    landmarks: np.ndarray,
    face_box: np.ndarray,
    options: Options,
    original_size: tuple[int, int],
    *,
    request: IdPhotoRequest,
    face_count: int,
    mask_trusted: bool,
) -> tuple[Portrait, dict, bytes]:
    """The compose step with a preset: (the portrait, the compliance report, the print-sheet
    JPEG or b"" without a layout). Arguments as :func:`facecraft.pipeline.compose.compose_portrait`;
    ``options`` already carry the preset's size, background and cap (``apply_preset``)."""
    preset = PRESETS[request.preset]
    h, w = rgb.shape[:2]
    alpha = alpha_from_map(seg_map, (w, h))
    if preset.geometry == "badge":
        portrait = compose_portrait(rgb, seg_map, landmarks, face_box, options, original_size, dpi=preset.dpi)
        placement = badge_placement(landmarks, face_box, options.face_margin, (w, h), portrait.output_size)
        report = _report(
            preset, placement, rgb, alpha, portrait.jpeg, options.background, face_count, mask_trusted
        )
        photo_rgb = np.asarray(Image.open(io.BytesIO(portrait.jpeg)).convert("RGB"))
    else:
        made = make_id_photo(
            rgb,
            alpha,
            landmarks,
            preset,
            background=options.background,
            max_jpeg_kb=options.max_jpeg_kb,
            face_count=face_count,
            mask_trusted=mask_trusted,
        )
        portrait = Portrait(
            png=made.png,
            jpeg=made.jpeg,
            face_box=box_in_original(face_box, (w, h), original_size),
            jpeg_cap_met=made.jpeg_cap_met,
            output_size=preset.pixel_size,
        )
        report, photo_rgb = made.compliance, made.rgb
    sheet = b""
    if request.layout is not None:
        sheet, plan = print_sheet(photo_rgb, preset, LAYOUTS[request.layout])
        report["print_sheet"] = plan
    return portrait, report, sheet
