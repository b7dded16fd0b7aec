"""The tensor contract of the processor ensembles (docs/processors.md), from the registry.

:func:`encode_processor_inputs` turns an image and options (validated by ``facecraft.processors``)
into the ensemble's input tensors; :func:`result_from_processor_outputs` reads its outputs into a
:class:`ProcessorResult`. The sync and asyncio clients and the gateway all use these two.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facecraft import processors as registry
from facecraft.client.errors import InvalidOption
from facecraft.client.options import TensorSpec

_NUMPY_TYPES = {"INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_, "UINT8": np.uint8}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class ProcessorResult:
    """One processor result. Image processors: ``data`` (PNG or JPEG bytes, ``media_type``) and
    ``output_size`` (w, h). ``face_analyser``: ``report`` (the JSON as a dict) and ``annotated``
    (PNG bytes, empty unless requested). ``face_count``: faces found (face processors; else None)."""

    processor: str
    data: bytes = b""
    media_type: str = "application/octet-stream"
    output_size: tuple[int, int] | None = None
    face_count: int | None = None
    report: dict | None = None
    annotated: bytes = b""
    options: dict = field(default_factory=dict)

    def files(self, stem: str) -> list[tuple[str, bytes]]:
        """(file name, bytes) to write for this result: ``<stem>.png``/``.jpg``, or ``<stem>.json``
        (the report) plus ``<stem>.annotated.png`` when an annotated image came back."""
        if self.report is None:
            return [(f"{stem}.{'jpg' if self.media_type == MEDIA_TYPES['jpeg'] else 'png'}", self.data)]
        written = [(f"{stem}.json", json.dumps(self.report, indent=1).encode("utf-8"))]
        if self.annotated:
            written.append((f"{stem}.annotated.png", self.annotated))
        return written

    def report_with_image(self) -> dict:
        """``report`` plus ``annotated_png_base64`` when an annotated image came back."""
        report = dict(self.report or {})
        if self.annotated:
            report["annotated_png_base64"] = base64.b64encode(self.annotated).decode("ascii")
        return report


def resolve_processor_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """Every option of processor ``name`` (registry defaults filled in); ``InvalidOption`` for an
    unknown processor, an unknown option or a bad value (``KeyError`` names the valid processors)."""
    processor = registry.get(name)
    try:
        return processor.resolve(options)
    except registry.OptionError as error:
        raise InvalidOption(f"invalid_option: client: {error}", step="client", detail=str(error)) from None


def image_tensors(name: str, images) -> dict[str, object]:
    """The encoded-image inputs of processor ``name`` (``Processor.image_inputs``): ``images`` is
    the bytes of its one image, or, for several (face_swapper: ``SOURCE``, ``TARGET``), a mapping
    tensor name → bytes. Where the processor has an ``identity`` (face_swapper), its embedding
    (``SOURCE_EMBEDDING``: float32 [512], from :func:`identity_request`) may replace that image.
    Raises ``TypeError`` for anything else or a missing/extra name."""
    processor = registry.get(name)
    expected = processor.image_inputs
    if isinstance(images, (bytes, bytearray, memoryview)) and len(expected) == 1:
        return {expected[0]: bytes(images)}
    identity = processor.identity
    if isinstance(images, dict) and identity is not None and identity.tensor in images:
        expected = tuple(identity.tensor if t == identity.image else t for t in expected)
    if not isinstance(images, dict) or set(images) != set(expected):
        raise TypeError(f"{name} takes the image(s) {', '.join(expected)}, got {type(images).__name__}")
    for tensor, data in images.items():
        if identity is not None and tensor == identity.tensor:
            embedding = np.asarray(data)
            if embedding.size != identity.size:
                raise TypeError(f"{tensor} must hold {identity.size} values, got shape {embedding.shape}")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{tensor} must be bytes, got {type(data).__name__}")
    return {
        tensor: images[tensor]
        if identity is not None and tensor == identity.tensor
        else bytes(images[tensor])
        for tensor in expected
    }


def _image_specs(name: str, images) -> list[TensorSpec]:
    specs = []
    identity = registry.get(name).identity
    for tensor, data in image_tensors(name, images).items():
        if identity is not None and tensor == identity.tensor:
            array = np.asarray(data, dtype=_NUMPY_TYPES[identity.datatype]).reshape(1, identity.size)
            specs.append(TensorSpec(tensor, array, identity.datatype))
        else:
            specs.append(TensorSpec(tensor, np.array([[data]], dtype=np.object_), "BYTES"))
    return specs


def _option_spec(option: registry.Option, value: object) -> TensorSpec:
    if option.datatype == "BYTES":
        array = np.array([[str(value).encode("utf-8")]], dtype=np.object_)
    elif option.kind == "color":
        array = np.array([value], dtype=np.uint8)
    else:
        array = np.array([[value]], dtype=_NUMPY_TYPES[option.datatype])
    return TensorSpec(option.tensor, array, option.datatype)


def encode_processor_inputs(name: str, image_bytes, options: dict[str, object]) -> list[TensorSpec]:
    """Input tensors (batch dimension 1) of processor ``name``'s ensemble: ``IMAGE`` BYTES [1, 1]
    (or each of its ``image_inputs``, :func:`image_tensors`) plus one tensor per option whose value
    is set (an option left unset — e.g. no background colour — is not sent; the ensemble applies
    the registry default)."""
    resolved = resolve_processor_options(name, options)
    specs = _image_specs(name, image_bytes)
    for option in registry.get(name).options:
        value = resolved[option.name]
        if option.tensor is None or value is None:
            continue
        specs.append(_option_spec(option, value))
    return specs


def identity_request(
    name: str, image_bytes: bytes, options: dict[str, object]
) -> tuple[str, list[TensorSpec], tuple[str, ...]]:
    """(ensemble, input tensors, output names) that compute processor ``name``'s identity
    (``Processor.identity``: face_swapper's source embedding, ``face_swapper_source``) from the
    encoded image ``image_bytes``, with the options the identity takes (``source_face``).
    Raises ``ValueError`` for a processor without one, ``InvalidOption`` for a bad option."""
    processor = registry.get(name)
    identity = processor.identity
    if identity is None:
        raise ValueError(f"{name} has no identity input to compute once")
    resolved = resolve_processor_options(name, options)
    specs = [TensorSpec(identity.image, np.array([[bytes(image_bytes)]], dtype=np.object_), "BYTES")]
    specs += [_option_spec(processor.option(o), resolved[o]) for o in identity.options]
    return identity.ensemble, specs, (identity.tensor,)


def identity_from_outputs(name: str, as_numpy: Callable[[str], np.ndarray | None]) -> np.ndarray:
    """The identity embedding (float32 [size]) from the outputs of :func:`identity_request`."""
    identity = registry.get(name).identity
    return np.asarray(as_numpy(identity.tensor), dtype=np.float32).reshape(identity.size)


def processor_request(
    name: str, image_bytes: bytes, options: dict[str, object]
) -> tuple[str, list[TensorSpec], tuple[str, ...], dict[str, object]]:
    """(ensemble, input tensors, output names, resolved options) of one processor request."""
    resolved = resolve_processor_options(name, options)
    processor = registry.get(name)
    return (
        processor.ensembles[0],
        encode_processor_inputs(name, image_bytes, resolved),
        processor.outputs,
        resolved,
    )


def result_from_processor_outputs(
    name: str, as_numpy: Callable[[str], np.ndarray | None], options: dict[str, object]
) -> ProcessorResult:
    """A :class:`ProcessorResult` from the ensemble outputs (``as_numpy(name)`` → batch-1 array)."""

    def first(output: str):
        array = as_numpy(output)
        return None if array is None else np.asarray(array).reshape(-1)

    count = first("FACE_COUNT") if "FACE_COUNT" in registry.get(name).outputs else None
    face_count = None if count is None else int(count[0])
    if name == "face_analyser":
        report = json.loads(bytes(first("JSON")[0]).decode("utf-8"))
        annotated = first("ANNOTATED")
        return ProcessorResult(
            name,
            media_type="application/json",
            face_count=face_count,
            report=report,
            annotated=b"" if annotated is None else bytes(annotated[0]),
            options=options,
        )
    size = first("OUTPUT_SIZE")
    fmt = str(options.get("format", "png"))
    return ProcessorResult(
        name,
        data=bytes(first("OUTPUT")[0]),
        media_type=MEDIA_TYPES.get(fmt, "image/png"),
        output_size=None if size is None else (int(size[0]), int(size[1])),
        face_count=face_count,
        options=options,
    )
