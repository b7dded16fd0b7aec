"""Request options of the portrait ensembles and their encoding as Triton input tensors.

Every option is optional: an option left as ``None`` is not sent at all, so the ensemble applies
its own default (docs/triton.md). Values are checked against the contract's ranges here so a
mistake fails fast with ``InvalidOption`` instead of a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from facecraft import processors
from facecraft.client.errors import InvalidOption
from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES

ENHANCED_MODEL = "portrait"
BASIC_MODEL = "portrait_basic"
OUTPUT_NAMES = processors.get("portrait").outputs


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor ready for a Triton request: name, numpy value with the batch dim, datatype."""

    name: str
    value: np.ndarray
    datatype: str


@dataclass(frozen=True)
class PortraitOptions:
    """Options of one portrait request; ``None`` means "not sent, server default"."""

    enhance: bool = True
    width: int | None = None
    height: int | None = None
    background: tuple[int, int, int] | None = None
    face_margin: float | None = None
    oval_mask: bool | None = None
    fidelity: float | None = None
    max_jpeg_kb: int | None = None
    touch_up: bool | None = None
    preset: str | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        _check_name("preset", self.preset, PRESET_NAMES)
        _check_name("layout", self.layout, LAYOUT_NAMES)
        if self.layout is not None and self.preset is None:
            raise InvalidOption("invalid_option: client: layout needs a preset", step="client")
        for name in ("width", "height", "max_jpeg_kb"):
            _check_int(name, getattr(self, name), *_portrait_range(name))
        for name in ("face_margin", "fidelity"):
            _check_float(name, getattr(self, name), *_portrait_range(name))
        if self.fidelity is not None and not self.enhance:
            raise InvalidOption(
                "invalid_option: client: fidelity only applies with enhance=True", step="client"
            )
        if self.background is not None:
            background = tuple(self.background)
            if len(background) != 3 or not all(_is_int(c) and 0 <= c <= 255 for c in background):
                raise InvalidOption(
                    f"invalid_option: client: background must be three integers 0..255, got {self.background!r}",
                    step="client",
                )
            object.__setattr__(self, "background", tuple(int(c) for c in background))
        for name in ("oval_mask", "touch_up", "enhance"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise InvalidOption(
                    f"invalid_option: client: {name} must be a bool, got {value!r}", step="client"
                )

    @property
    def model_name(self) -> str:
        """``portrait`` with enhancement, ``portrait_basic`` without (never runs CodeFormer)."""
        return ENHANCED_MODEL if self.enhance else BASIC_MODEL

    def sent_options(self) -> dict[str, object]:
        """The options that will be sent (those not ``None``), by field name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "enhance" and getattr(self, f.name) is not None
        }


def _portrait_range(name: str) -> tuple[float, float]:
    """(low, high) of a portrait option, from the registry (which reads pipeline/options.py)."""
    option = processors.get("portrait").option(name)
    return option.low, option.high


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if value is None:
        return
    if not _is_int(value) or not low <= int(value) <= high:
        raise InvalidOption(
            f"invalid_option: client: {name} must be an integer {low}..{high}, got {value!r}", step="client"
        )


def _check_name(name: str, value: object, names: tuple[str, ...]) -> None:
    if value is not None and value not in names:
        raise InvalidOption(
            f"invalid_option: client: {name} must be one of {', '.join(names)}, got {value!r}", step="client"
        )


def _check_float(name: str, value: object, low: float, high: float) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating, np.integer))
        or not (low <= float(value) <= high)
    ):
        raise InvalidOption(
            f"invalid_option: client: {name} must be a number {low}..{high}, got {value!r}", step="client"
        )


def encode_inputs(image_bytes: bytes, options: PortraitOptions) -> list[TensorSpec]:
    """Build the input tensors of one request (batch dimension 1) for ``options.model_name``.

    ``IMAGE`` is BYTES ``[1,1]`` holding the encoded file; each option that is not ``None`` becomes
    its contract tensor (INT32/FP32/UINT8/BOOL with a leading batch dim of 1).
    """
    if not isinstance(image_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(f"image_bytes must be bytes, got {type(image_bytes).__name__}")
    specs = [TensorSpec("IMAGE", np.array([[bytes(image_bytes)]], dtype=np.object_), "BYTES")]
    if options.width is not None:
        specs.append(TensorSpec("WIDTH", np.array([[options.width]], dtype=np.int32), "INT32"))
    if options.height is not None:
        specs.append(TensorSpec("HEIGHT", np.array([[options.height]], dtype=np.int32), "INT32"))
    if options.background is not None:
        specs.append(TensorSpec("BACKGROUND", np.array([options.background], dtype=np.uint8), "UINT8"))
    if options.face_margin is not None:
        specs.append(TensorSpec("FACE_MARGIN", np.array([[options.face_margin]], dtype=np.float32), "FP32"))
    if options.oval_mask is not None:
        specs.append(TensorSpec("OVAL_MASK", np.array([[bool(options.oval_mask)]], dtype=np.bool_), "BOOL"))
    if options.fidelity is not None:
        specs.append(TensorSpec("FIDELITY", np.array([[options.fidelity]], dtype=np.float32), "FP32"))
    if options.max_jpeg_kb is not None:
        specs.append(TensorSpec("MAX_JPEG_KB", np.array([[options.max_jpeg_kb]], dtype=np.int32), "INT32"))
    if options.touch_up is not None:
        specs.append(TensorSpec("TOUCH_UP", np.array([[bool(options.touch_up)]], dtype=np.bool_), "BOOL"))
    if options.preset is not None:
        specs.append(TensorSpec("PRESET", np.array([[options.preset.encode()]], dtype=np.object_), "BYTES"))
    if options.layout is not None:
        specs.append(TensorSpec("LAYOUT", np.array([[options.layout.encode()]], dtype=np.object_), "BYTES"))
    return specs
