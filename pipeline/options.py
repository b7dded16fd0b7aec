"""Request options: defaults, validation, and the FP32[9] ``OPTIONS`` tensor layout.

Layout of the vector (see docs/triton.md): ``[width, height, bg_r, bg_g, bg_b, face_margin,
oval_mask, max_jpeg_kb, touch_up]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facecraft.pipeline.errors import INVALID_OPTION, PipelineError

STEP = "decode"

MIN_SIDE, MAX_SIDE = 64, 4096
MIN_MARGIN, MAX_MARGIN = 0.0, 2.0
MIN_JPEG_KB, MAX_JPEG_KB = 8, 10240
MIN_FIDELITY, MAX_FIDELITY = 0.0, 1.0
OPTIONS_VECTOR_LENGTH = 9


@dataclass(frozen=True)
class Options:
    """Resolved, validated portrait options."""

    width: int = 648
    height: int = 648
    background: tuple[int, int, int] = (240, 240, 240)
    face_margin: float = 0.3
    oval_mask: bool = True
    max_jpeg_kb: int = 200
    touch_up: bool = False

    def to_vector(self) -> np.ndarray:
        """The FP32[9] ``OPTIONS`` tensor (no batch dimension)."""
        return np.array(
            [
                self.width,
                self.height,
                *self.background,
                self.face_margin,
                1.0 if self.oval_mask else 0.0,
                self.max_jpeg_kb,
                1.0 if self.touch_up else 0.0,
            ],
            dtype=np.float32,
        )

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> Options:
        """Inverse of :meth:`to_vector`; re-validates, so a tampered vector cannot slip through."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        if values.size != OPTIONS_VECTOR_LENGTH:
            raise PipelineError(
                INVALID_OPTION,
                "compose",
                f"OPTIONS has {values.size} values, expected {OPTIONS_VECTOR_LENGTH}",
            )
        if not np.isfinite(values).all():
            raise PipelineError(
                INVALID_OPTION, "compose", f"OPTIONS holds non-finite values: {values.tolist()}"
            )
        return resolve_options(
            width=int(round(values[0])),
            height=int(round(values[1])),
            background=tuple(int(round(v)) for v in values[2:5]),
            face_margin=float(np.float32(values[5])),
            oval_mask=bool(values[6] >= 0.5),
            max_jpeg_kb=int(round(values[7])),
            touch_up=bool(values[8] >= 0.5),
        )


DEFAULT_OPTIONS = Options()
DEFAULT_FIDELITY = 0.7


def _integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise PipelineError(INVALID_OPTION, STEP, f"{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, (float, np.floating)) and (not math.isfinite(value) or value != int(value)):
        raise PipelineError(INVALID_OPTION, STEP, f"{name} must be an integer, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise PipelineError(INVALID_OPTION, STEP, f"{name}={number} is outside {low}..{high}")
    return number


def _real(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise PipelineError(INVALID_OPTION, STEP, f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise PipelineError(INVALID_OPTION, STEP, f"{name}={number} is outside {low}..{high}")
    return number


def _flag(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise PipelineError(INVALID_OPTION, STEP, f"{name} must be a boolean, got {value!r}")


def _background(value) -> tuple[int, int, int]:
    try:
        channels = list(value)
    except TypeError:
        raise PipelineError(
            INVALID_OPTION, STEP, f"background must be 3 values (R, G, B), got {value!r}"
        ) from None
    if len(channels) != 3:
        raise PipelineError(
            INVALID_OPTION, STEP, f"background must be 3 values (R, G, B), got {len(channels)}"
        )
    return tuple(_integer(f"background[{i}]", c, 0, 255) for i, c in enumerate(channels))  # type: ignore[return-value]


def resolve_options(
    width=None,
    height=None,
    background=None,
    face_margin=None,
    oval_mask=None,
    max_jpeg_kb=None,
    touch_up=None,
) -> Options:
    """Fill defaults for ``None`` and validate every option; the error names the bad option.

    Raises ``PipelineError(invalid_option, "decode", ...)``.
    """
    d = DEFAULT_OPTIONS
    return Options(
        width=d.width if width is None else _integer("width", width, MIN_SIDE, MAX_SIDE),
        height=d.height if height is None else _integer("height", height, MIN_SIDE, MAX_SIDE),
        background=d.background if background is None else _background(background),
        face_margin=d.face_margin
        if face_margin is None
        else _real("face_margin", face_margin, MIN_MARGIN, MAX_MARGIN),
        oval_mask=d.oval_mask if oval_mask is None else _flag("oval_mask", oval_mask),
        max_jpeg_kb=d.max_jpeg_kb
        if max_jpeg_kb is None
        else _integer("max_jpeg_kb", max_jpeg_kb, MIN_JPEG_KB, MAX_JPEG_KB),
        touch_up=d.touch_up if touch_up is None else _flag("touch_up", touch_up),
    )


def _name(option: str, value, names: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip().lower()
    if text == "":
        return None
    if text not in names:
        raise PipelineError(INVALID_OPTION, STEP, f"{option}={text!r} is not one of {', '.join(names)}")
    return text


@dataclass(frozen=True)
class IdPhotoRequest:
    """The ID-photo part of a request: a preset name (None: the plain portrait) and an optional
    print-sheet layout name (needs a preset). See ``facecraft.pipeline.presets``."""

    preset: str | None = None
    layout: str | None = None

    def to_vector(self) -> np.ndarray:
        """The INT32[2] ``ID_PHOTO`` tensor: indices into ``PRESET_NAMES`` / ``LAYOUT_NAMES``, -1 = none."""
        from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES

        return np.array(
            [
                -1 if self.preset is None else PRESET_NAMES.index(self.preset),
                -1 if self.layout is None else LAYOUT_NAMES.index(self.layout),
            ],
            dtype=np.int32,
        )

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> IdPhotoRequest:
        """Inverse of :meth:`to_vector`; an index out of range is ``invalid_option`` (step compose)."""
        from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES

        values = np.asarray(vector).reshape(-1)
        if values.size != 2:
            raise PipelineError(INVALID_OPTION, "compose", f"ID_PHOTO has {values.size} values, expected 2")
        names = []
        for value, table, what in ((values[0], PRESET_NAMES, "preset"), (values[1], LAYOUT_NAMES, "layout")):
            index = int(value)
            if not -1 <= index < len(table):
                raise PipelineError(INVALID_OPTION, "compose", f"ID_PHOTO {what} index {index} is unknown")
            names.append(None if index < 0 else table[index])
        return resolve_id_photo(*names)


def resolve_id_photo(preset=None, layout=None) -> IdPhotoRequest:
    """Validate ``preset`` (a name of ``PRESET_NAMES``) and ``layout`` (``LAYOUT_NAMES``, only with a
    preset); empty strings count as absent. Raises ``PipelineError(invalid_option, "decode", ...)``."""
    from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES

    preset_name = _name("preset", preset, PRESET_NAMES)
    layout_name = _name("layout", layout, LAYOUT_NAMES)
    if layout_name is not None and preset_name is None:
        raise PipelineError(INVALID_OPTION, STEP, f"layout={layout_name!r} needs a preset")
    return IdPhotoRequest(preset_name, layout_name)


def apply_preset(
    options: Options, preset_name: str | None, *, background_set: bool, max_jpeg_kb_set: bool
) -> Options:
    """The options a preset fixes: its pixel size, no oval; the background unless the request set
    one; the JPEG cap = the preset's byte limit (the request's cap when lower or when the preset
    has none). Without a preset, ``options`` unchanged."""
    if preset_name is None:
        return options
    from facecraft.pipeline.presets import PRESETS

    preset = PRESETS[preset_name]
    if preset.geometry == "badge":
        return options
    width, height = preset.pixel_size
    cap = options.max_jpeg_kb if max_jpeg_kb_set or preset.max_kb is None else preset.max_kb
    if preset.max_kb is not None:
        cap = min(cap, preset.max_kb)
    return Options(
        width=width,
        height=height,
        background=options.background if background_set else preset.default_background,
        face_margin=options.face_margin,
        oval_mask=False,
        max_jpeg_kb=cap,
        touch_up=options.touch_up,
    )


def resolve_fidelity(fidelity=None) -> float:
    """CodeFormer fidelity weight ``w`` in 0..1 (default 0.7); 0 = strongest restoration."""
    if fidelity is None:
        return DEFAULT_FIDELITY
    return _real("fidelity", fidelity, MIN_FIDELITY, MAX_FIDELITY)
