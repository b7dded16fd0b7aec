"""The result of one portrait request, decoded from the ensemble's output tensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facecraft.client.options import OUTPUT_NAMES


@dataclass(frozen=True)
class PortraitResult:
    """One finished portrait.

    ``png``: RGBA PNG bytes (background transparent); ``jpeg``: JPEG bytes on the background colour;
    ``face_box``: (x, y, width, height) of the chosen face in the EXIF-oriented input image;
    ``face_count``: faces found (the largest is used); ``jpeg_cap_met``: False when the JPEG could
    not be brought under ``max_jpeg_kb``; ``output_size``: (width, height) of both outputs;
    ``compliance``: the ID-photo compliance report (docs/presets.md), None without a preset;
    ``print_sheet``: the print-sheet JPEG (300 dpi), None without a layout.
    """

    png: bytes
    jpeg: bytes
    face_box: tuple[int, int, int, int]
    face_count: int
    jpeg_cap_met: bool
    output_size: tuple[int, int]
    compliance: dict | None = None
    print_sheet: bytes | None = None


OPTIONAL_OUTPUTS = ("COMPLIANCE", "PRINT_SHEET")


def _first_bytes(array: np.ndarray) -> bytes:
    value = np.asarray(array).reshape(-1)[0]
    return bytes(value) if not isinstance(value, bytes) else value


def result_from_outputs(get_output: Callable[[str], np.ndarray | None]) -> PortraitResult:
    """Build a ``PortraitResult`` from ``get_output(name) -> numpy array`` (tritonclient's ``as_numpy``)."""
    arrays = {}
    for name in OUTPUT_NAMES:
        array = get_output(name)
        if array is None and name in OPTIONAL_OUTPUTS:  # a server without ID-photo presets
            array = np.array([b""], dtype=np.object_)
        if array is None:
            raise ValueError(f"the server response has no output {name!r}")
        arrays[name] = np.asarray(array)
    box = arrays["FACE_BOX"].reshape(-1).astype(int)
    size = arrays["OUTPUT_SIZE"].reshape(-1).astype(int)
    compliance = _first_bytes(arrays["COMPLIANCE"])
    sheet = _first_bytes(arrays["PRINT_SHEET"])
    return PortraitResult(
        png=_first_bytes(arrays["PNG"]),
        jpeg=_first_bytes(arrays["JPEG"]),
        face_box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        face_count=int(arrays["FACE_COUNT"].reshape(-1)[0]),
        jpeg_cap_met=bool(arrays["JPEG_CAP_MET"].reshape(-1)[0]),
        output_size=(int(size[0]), int(size[1])),
        compliance=json.loads(compliance) if compliance else None,
        print_sheet=sheet or None,
    )
