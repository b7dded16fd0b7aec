"""The processors registry: the one description of every processor the service offers.

A processor is a named operation on an uploaded image, served by Triton ensemble(s). Its entry
here gives its description, input and output kinds, its options (type, range, default, doc, and
the ensemble input tensor that carries each), the ensemble(s) behind it and the Triton models it
needs. Everything else reads this module: the gateway routes and OpenAPI (``GET/POST
/api/v1/processors``), the client's per-processor methods, the ``facecraft process --processor``
choices, the Python steps that validate the options inside Triton (``facecraft.pipeline.processors``)
and the table in ``docs/processors.md`` (:func:`markdown_table`).

Adding a processor = one :class:`Processor` entry in :data:`PROCESSORS` plus its ensemble.

This module imports nothing heavier than the pipeline's option constants, so the Triton Python
stubs, the gateway, the client and the CLI can all import it without importing each other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from facecraft.pipeline import options as portrait_ranges
from facecraft.pipeline import tiles as frame_tiles
from facecraft.pipeline.presets import PRESET_NAMES

OPTION_KINDS = ("int", "float", "bool", "color", "choice")
OUTPUT_FORMATS = ("png", "jpeg")


class OptionError(ValueError):
    """An option value a processor refuses; ``option`` names it, ``str()`` says why."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Option:
    """One processor option.

    ``kind``: ``int`` / ``float`` (inclusive ``low``..``high``), ``bool``, ``color`` (R, G, B each
    0..255; written ``#rrggbb`` or ``r,g,b``; ``None`` default = unset) or ``choice`` (one of
    ``choices``). ``tensor``/``datatype``: the optional ensemble input carrying it (docs/processors.md).
    """

    name: str
    kind: str
    default: object
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    tensor: str | None = None
    datatype: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")

    @property
    def range_text(self) -> str:
        """Human-readable range: ``1..32``, ``0.0..1.0``, ``png | jpeg``, ``true | false``."""
        if self.kind in ("int", "float"):
            return f"{self.low}..{self.high}"
        if self.kind == "choice":
            return " | ".join(self.choices)
        if self.kind == "bool":
            return "true | false"
        return "#rrggbb or r,g,b"

    def parse(self, value: object) -> object:
        """Validate ``value`` (a Python value or a form string) into this option's type.

        Returns int / float / bool / (r, g, b) tuple / str. Raises :class:`OptionError`.
        """
        if isinstance(value, str):
            value = value.strip()
        if self.kind == "int":
            number = _number(self.name, value, integer=True)
            return int(self._in_range(number))
        if self.kind == "float":
            return float(self._in_range(_number(self.name, value, integer=False)))
        if self.kind == "bool":
            return _flag(self.name, value)
        if self.kind == "color":
            return _color(self.name, value)
        text = str(value).lower() if isinstance(value, str) else value
        if text not in self.choices:
            raise OptionError(self.name, f"{self.name}={value!r} is not one of {', '.join(self.choices)}")
        return text

    def _in_range(self, number: float) -> float:
        if not self.low <= number <= self.high:
            raise OptionError(self.name, f"{self.name}={number:g} is outside {self.low}..{self.high}")
        return number

    def as_dict(self) -> dict:
        """JSON description (``GET /api/v1/processors``)."""
        described: dict = {"name": self.name, "type": self.kind, "default": self.default, "doc": self.doc}
        if self.kind in ("int", "float"):
            described.update(minimum=self.low, maximum=self.high)
        if self.kind == "choice":
            described["choices"] = list(self.choices)
        return described


def _number(name: str, value: object, *, integer: bool) -> float:
    what = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise OptionError(name, f"{name} must be {what}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OptionError(name, f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(number) or (integer and number != int(number)):
        raise OptionError(name, f"{name} must be {what}, got {value!r}")
    return number


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise OptionError(name, f"{name} must be true or false, got {value!r}")


_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6})")


def _color(name: str, value: object) -> tuple[int, int, int]:
    if isinstance(value, str):
        match = _HEX_COLOR.fullmatch(value)
        if match:
            digits = match.group(1)
            return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        value = [part for part in value.split(",")]
    try:
        channels = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise OptionError(name, f"{name} must be #rrggbb or r,g,b, got {value!r}") from None
    if len(channels) != 3:
        raise OptionError(name, f"{name} must be #rrggbb or r,g,b (3 channels), got {value!r}")
    result = []
    for channel in channels:
        number = _number(name, channel, integer=True)
        if not 0 <= number <= 255:
            raise OptionError(name, f"{name}: each channel must be 0..255, got {value!r}")
        result.append(int(number))
    return tuple(result)  # type: ignore[return-value]


@dataclass(frozen=True)
class Identity:
    """An image input a job turns into an embedding ONCE, then feeds to every frame (or image) of
    the job instead of the file: face_swapper's source identity (docs/video.md).

    ``image``: the image input it replaces (``SOURCE``); ``tensor`` / ``datatype`` / ``size``: the
    optional ensemble input that takes the embedding instead (``SOURCE_EMBEDDING`` FP32 [512]);
    ``ensemble``: the ensemble that computes it from ``image`` and the ``options`` named here
    (its only output is ``tensor``)."""

    image: str
    tensor: str
    datatype: str
    size: int
    ensemble: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Processor:
    """One registry entry (see the module docstring). ``ensembles``: Triton ensemble names (the
    first is the default); ``models``: every Triton model its ensembles need, by ensemble.
    ``per_frame``: each output depends on its input image alone (and the job's other uploads, such
    as face_swapper's source), so the processor also runs over every frame of a video
    (docs/video.md); False for one that works on one photo at a time. ``image_inputs``: the
    ensemble's encoded-image inputs; the last one is the image a chain or a video carries from step
    to step (``IMAGE``, face_swapper's ``TARGET``), the others are uploads of their own
    (:attr:`extra_inputs`). ``identity``: an extra input a video job computes once
    (:class:`Identity`)."""

    name: str
    description: str
    input_kind: str
    output_kind: str
    options: tuple[Option, ...]
    ensembles: tuple[str, ...]
    models: tuple[str, ...]
    outputs: tuple[str, ...] = ("OUTPUT", "OUTPUT_SIZE")
    output_formats: tuple[str, ...] = OUTPUT_FORMATS
    notes: str = ""
    per_frame: bool = True
    # The ensemble's encoded-image inputs, one uploaded file each (multipart field = lower-case name).
    image_inputs: tuple[str, ...] = ("IMAGE",)
    # A rule across options (resolved values → raises OptionError), checked by ``resolve``, so the
    # gateway refuses a bad combination before anything is queued and the Triton step alike.
    check: Callable[[dict[str, object]], None] | None = None
    identity: Identity | None = None

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """The image inputs besides the one a chain carries: each an upload of its own in a job
        (multipart field = lower-case name: face_swapper's ``source``); () for most processors."""
        return self.image_inputs[:-1]

    def option(self, name: str) -> Option:
        """The option called ``name``; :class:`OptionError` listing the valid ones otherwise."""
        for option in self.options:
            if option.name == name:
                return option
        valid = ", ".join(o.name for o in self.options) or "none"
        raise OptionError(name, f"{self.name} has no option {name!r} (options: {valid})")

    def resolve(self, values: dict[str, object]) -> dict[str, object]:
        """Every option of this processor: ``values`` (validated, by option name) over the defaults.

        Values that are ``None`` count as unset. Raises :class:`OptionError` for an unknown name
        or a bad value.
        """
        resolved = {option.name: option.default for option in self.options}
        for name, value in values.items():
            if value is None:
                continue
            resolved[name] = self.option(name).parse(value)
        if self.check is not None:
            self.check(resolved)
        return resolved

    def as_dict(self) -> dict:
        """JSON description (``GET /api/v1/processors``)."""
        return {
            "name": self.name,
            "description": self.description,
            "input": self.input_kind,
            "output": self.output_kind,
            "output_formats": list(self.output_formats),
            "options": [option.as_dict() for option in self.options],
            "ensembles": list(self.ensembles),
            "models": list(self.models),
            "outputs": list(self.outputs),
        }


# -- Shared option definitions (one place for each range) -------------------------------------------

MAX_FACES_RANGE = (1, 32)
MIN_FACE_SIZE_RANGE = (0, 4096)


MAX_FACES = Option(
    "max_faces",
    "int",
    16,
    "at most this many faces, the largest first (ties left to right)",
    *MAX_FACES_RANGE,
    tensor="MAX_FACES",
    datatype="INT32",
)

MIN_FACE_SIZE = Option(
    "min_face_size",
    "int",
    0,
    "ignore faces whose box side is below this many pixels of the input (0: the detector's own "
    "minimum, 40 px up to 0.64 MP)",
    *MIN_FACE_SIZE_RANGE,
    tensor="MIN_FACE_SIZE",
    datatype="INT32",
)
FIDELITY = Option(
    "fidelity",
    "float",
    portrait_ranges.DEFAULT_FIDELITY,
    "CodeFormer fidelity weight w: 0 = strongest restoration, 1 = closest to the input",
    portrait_ranges.MIN_FIDELITY,
    portrait_ranges.MAX_FIDELITY,
    tensor="FIDELITY",
    datatype="FP32",
)
FORMAT = Option(
    "format",
    "choice",
    "png",
    "output image format",
    choices=OUTPUT_FORMATS,
    tensor="FORMAT",
    datatype="BYTES",
)

# Segmentation models of background_remover: request name -> Triton model. `u2net` (Triton) holds
# the human-segmentation weights and is the one the portrait ensembles use.
# frame_enhancer scale → the Real-ESRGAN model behind it.
FRAME_ENHANCER_MODELS = {"4": "realesrgan_x4plus", "2": "realesrgan_x2plus"}


def _jpeg_needs_opaque_output(options: dict[str, object]) -> None:
    """background_remover: JPEG has no alpha, so ``format=jpeg`` needs ``background`` or ``mask_only``."""
    if options["format"] == "jpeg" and options["background"] is None and not options["mask_only"]:
        raise OptionError("format", "format=jpeg has no alpha: set background or mask_only")


SEGMENTATION_MODELS = {"u2net_human_seg": "u2net", "u2net": "u2net_general", "u2netp": "u2netp"}

D = portrait_ranges.DEFAULT_OPTIONS
PORTRAIT_OPTIONS = (
    Option("width", "int", D.width, "output width (px)", portrait_ranges.MIN_SIDE, portrait_ranges.MAX_SIDE,
           tensor="WIDTH", datatype="INT32"),
    Option("height", "int", D.height, "output height (px)", portrait_ranges.MIN_SIDE, portrait_ranges.MAX_SIDE,
           tensor="HEIGHT", datatype="INT32"),
    Option("background", "color", D.background, "JPEG background colour",
           tensor="BACKGROUND", datatype="UINT8"),
    Option("face_margin", "float", D.face_margin, "fraction of the face box added on each side",
           portrait_ranges.MIN_MARGIN, portrait_ranges.MAX_MARGIN, tensor="FACE_MARGIN", datatype="FP32"),
    Option("oval_mask", "bool", D.oval_mask, "feathered oval mask", tensor="OVAL_MASK", datatype="BOOL"),
    Option("enhance", "bool", True, "CodeFormer restoration (false: the portrait_basic ensemble)"),
    FIDELITY,
    Option("max_jpeg_kb", "int", D.max_jpeg_kb, "JPEG size cap in KB",
           portrait_ranges.MIN_JPEG_KB, portrait_ranges.MAX_JPEG_KB, tensor="MAX_JPEG_KB", datatype="INT32"),
    Option("touch_up", "bool", D.touch_up, "exposure, white balance, mild sharpening",
           tensor="TOUCH_UP", datatype="BOOL"),
    Option("preset", "choice", None, "ID-photo preset (docs/presets.md; unset: the plain portrait)",
           choices=PRESET_NAMES, tensor="PRESET", datatype="BYTES"),
    # No `layout`: a processor answers one image, and the print sheet of a preset is served by
    # POST /api/v1/process (`layout_base64`) and its jobs; sent here it is an unknown option (400).
    Option("format", "choice", "png", "which output the REST route returns: the RGBA PNG or the "
           "size-capped JPEG (the ensemble returns both)", choices=OUTPUT_FORMATS),
)  # fmt: skip

PROCESSORS: dict[str, Processor] = {
    p.name: p
    for p in (
        Processor(
            name="portrait",
            description="Facecraft ID portrait: largest face restored, levelled, cropped, cut out "
            "(RGBA PNG + size-capped JPEG); also served by POST /api/v1/process",
            input_kind="image",
            output_kind="image",
            options=PORTRAIT_OPTIONS,
            ensembles=("portrait", "portrait_basic"),
            per_frame=False,  # an ID photo of one person, cropped to its face: per image only
            models=(
                "decode",
                "detect",
                "enhance_pre",
                "codeformer",
                "enhance_post",
                "segment_pre",
                "u2net",
                "compose",
            ),
            outputs=(
                "PNG",
                "JPEG",
                "FACE_BOX",
                "FACE_COUNT",
                "JPEG_CAP_MET",
                "OUTPUT_SIZE",
                "COMPLIANCE",
                "PRINT_SHEET",
            ),
        ),  # fmt: skip
        Processor(
            name="face_enhancer",
            description="CodeFormer on every face: each aligned to the FFHQ 512 template, all faces "
            "of the image restored in one batch, pasted back into the whole image",
            input_kind="image",
            output_kind="image",
            options=(
                FIDELITY,
                MAX_FACES,
                MIN_FACE_SIZE,
                Option(
                    "blend",
                    "float",
                    1.0,
                    "share of the restored face in the result (0: the input)",
                    0.0,
                    1.0,
                    tensor="BLEND",
                    datatype="FP32",
                ),
                Option(
                    "background_enhance",
                    "bool",
                    False,
                    "also upscale the whole image x2 with Real-ESRGAN (realesrgan_x2plus) and paste the "
                    "restored faces into it, as CodeFormer's --bg_upsampler realesrgan: the output is 2x the input",
                    tensor="BACKGROUND_ENHANCE",
                    datatype="BOOL",
                ),
                FORMAT,
            ),  # fmt: skip
            ensembles=("face_enhancer",),
            models=("faces", "face_enhance", "codeformer", FRAME_ENHANCER_MODELS["2"]),
            outputs=("OUTPUT", "OUTPUT_SIZE", "FACE_COUNT"),
        ),
        Processor(
            name="background_remover",
            description="U²-Net alpha matte of the whole image at its full resolution: RGBA PNG, "
            "a solid background, or the mask alone",
            input_kind="image",
            output_kind="image",
            options=(
                Option(
                    "model",
                    "choice",
                    "u2net_human_seg",
                    "segmentation model: u2net_human_seg (people), u2net (general), u2netp (small)",
                    choices=tuple(SEGMENTATION_MODELS),
                    tensor="SEG_MODEL",
                    datatype="BYTES",
                ),
                Option(
                    "background",
                    "color",
                    None,
                    "solid background colour instead of transparency (then PNG or JPEG)",
                    tensor="BACKGROUND",
                    datatype="UINT8",
                ),
                Option(
                    "mask_only",
                    "bool",
                    False,
                    "return the alpha mask as a grayscale image",
                    tensor="MASK_ONLY",
                    datatype="BOOL",
                ),
                FORMAT,
            ),  # fmt: skip
            ensembles=("background_remover",),
            models=("background_remove", "u2net"),
            notes="jpeg needs background or mask_only (JPEG has no alpha)",
            check=_jpeg_needs_opaque_output,
        ),
        Processor(
            name="frame_enhancer",
            description="Real-ESRGAN x4 or x2 upscaling of the whole image, in overlapping tiles "
            "sent to the model as one batch, seams cross-faded",
            input_kind="image",
            output_kind="image",
            options=(
                Option(
                    "scale",
                    "choice",
                    "4",
                    "upscaling factor: 4 (realesrgan_x4plus) or 2 (realesrgan_x2plus)",
                    choices=tuple(FRAME_ENHANCER_MODELS),
                    tensor="SCALE",
                    datatype="BYTES",
                ),
                Option(
                    "tile",
                    "int",
                    frame_tiles.DEFAULT_TILE,
                    "tile side in input pixels (even)",
                    frame_tiles.MIN_TILE,
                    frame_tiles.MAX_TILE,
                    tensor="TILE",
                    datatype="INT32",
                ),
                Option(
                    "overlap",
                    "int",
                    frame_tiles.DEFAULT_OVERLAP,
                    "overlap of neighbouring tiles in input pixels (at most a quarter of the tile)",
                    0,
                    frame_tiles.MAX_TILE // 4,
                    tensor="OVERLAP",
                    datatype="INT32",
                ),
                FORMAT,
            ),  # fmt: skip
            ensembles=("frame_enhancer",),
            models=("enhance_frame", *FRAME_ENHANCER_MODELS.values()),
            notes=f"input at most {frame_tiles.MAX_INPUT_PIXELS} pixels, output at most "
            f"{frame_tiles.MAX_OUTPUT_PIXELS}; the Real-ESRGAN models are exported by name "
            "(`facecraft export realesrgan_x4plus`)",
        ),
        Processor(
            name="face_swapper",
            description="Face swap (inswapper_128-compatible generator, ArcFace w600k_r50 identity): the "
            "source's face onto every target face (or one), pasted back with a feathered box mask; "
            "models under insightface's non-commercial licence",
            input_kind="source + target images",
            output_kind="image",
            options=(
                Option(
                    "source_face",
                    "int",
                    0,
                    "which source face gives the identity (0: the largest, then by size)",
                    0,
                    MAX_FACES_RANGE[1] - 1,
                    tensor="SOURCE_FACE",
                    datatype="INT32",
                ),
                Option(
                    "target_face",
                    "int",
                    -1,
                    "which target face to swap (-1: all, up to max_faces; 0: the largest)",
                    -1,
                    MAX_FACES_RANGE[1] - 1,
                    tensor="TARGET_FACE",
                    datatype="INT32",
                ),
                Option(
                    "enhance",
                    "bool",
                    False,
                    "run the swapped faces through CodeFormer after the swap",
                    tensor="ENHANCE",
                    datatype="BOOL",
                ),
                MAX_FACES,
                FORMAT,
            ),  # fmt: skip
            ensembles=("face_swapper", "face_swapper_source"),
            models=("face_swap", "arcface_w600k_r50", "inswapper_128", "codeformer"),
            outputs=("OUTPUT", "OUTPUT_SIZE", "FACE_COUNT"),
            image_inputs=("SOURCE", "TARGET"),
            identity=Identity(
                image="SOURCE",
                tensor="SOURCE_EMBEDDING",
                datatype="FP32",
                size=512,
                ensemble="face_swapper_source",
                options=("source_face",),
            ),
            notes="multipart `source` and `target` files (a job: `source` beside `file`, the "
            "target, image or video); the swap models are exported by name "
            "(`facecraft export arcface_w600k_r50`, `facecraft export inswapper_128`); "
            "non-commercial licence (insightface)",
        ),
        Processor(
            name="face_analyser",
            description="Every face as JSON: box, detector score, 68 landmarks, roll angle; "
            "an annotated image on request",
            input_kind="image",
            output_kind="json",
            options=(
                MAX_FACES,
                MIN_FACE_SIZE,
                Option(
                    "annotate",
                    "bool",
                    False,
                    "also return the image with boxes and landmarks drawn (PNG, base64 in the JSON)",
                    tensor="ANNOTATE",
                    datatype="BOOL",
                ),
            ),  # fmt: skip
            ensembles=("face_analyser",),
            models=("faces", "face_analyse"),
            outputs=("JSON", "ANNOTATED", "FACE_COUNT"),
            output_formats=(),
        ),
    )
}


def per_frame_names() -> tuple[str, ...]:
    """The processors that run over every frame of a video (``Processor.per_frame``)."""
    return tuple(name for name, processor in PROCESSORS.items() if processor.per_frame)


def names() -> tuple[str, ...]:
    """Every processor name, in registry order."""
    return tuple(PROCESSORS)


def get(name: str) -> Processor:
    """The processor ``name``; ``KeyError`` whose message lists the valid names otherwise."""
    try:
        return PROCESSORS[name]
    except KeyError:
        raise KeyError(f"unknown processor {name!r}; valid: {', '.join(PROCESSORS)}") from None


def parse_chain(text: str) -> tuple[str, ...]:
    """``"face_enhancer,background_remover"`` → the ordered names (each must exist and output an
    image except the last). Raises ``KeyError`` for an unknown name, ``ValueError`` otherwise."""
    chain = tuple(part.strip() for part in text.split(",") if part.strip())
    if not chain:
        raise ValueError("empty; give a comma-separated list of processor names")
    for index, name in enumerate(chain):
        processor = get(name)
        if processor.output_kind != "image" and index != len(chain) - 1:
            raise ValueError(f"{name} outputs {processor.output_kind}, so it can only end a chain")
    return chain


def markdown_table() -> str:
    """The processors table of ``docs/processors.md`` (between its ``registry-table`` markers)."""
    lines = [
        "| processor | input → output | options (type, range, default) | ensemble(s) | models |",
        "|---|---|---|---|---|",
    ]
    for processor in PROCESSORS.values():
        options = "<br>".join(
            f"`{o.name}` {o.kind} {o.range_text}, default `{_default_text(o.default)}`: {o.doc}"
            for o in processor.options
        )
        lines.append(
            f"| `{processor.name}`: {processor.description} "
            f"| {processor.input_kind} → {processor.output_kind} | {options} "
            f"| {', '.join(f'`{e}`' for e in processor.ensembles)} "
            f"| {', '.join(f'`{m}`' for m in processor.models)} |"
        )
    return "\n".join(lines) + "\n"


def _default_text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


TABLE_START = "<!-- registry-table:start (generated by `python -m facecraft.processors`) -->"
TABLE_END = "<!-- registry-table:end -->"


def with_table(document: str) -> str:
    """``document`` (docs/processors.md) with the text between its table markers replaced by
    :func:`markdown_table`. Raises ``ValueError`` when the markers are missing."""
    start, end = document.find(TABLE_START), document.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {TABLE_START!r} ... {TABLE_END!r} markers")
    return document[: start + len(TABLE_START)] + "\n" + markdown_table() + document[end:]


if __name__ == "__main__":  # python -m facecraft.processors [docs/processors.md]
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/processors.md")
    target.write_text(with_table(target.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote the processors table into {target}")
