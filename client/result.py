"""The result of one portrait request, decoded from the ensemble's output tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PortraitResult:
    """One finished portrait.

    ``png``: RGBA PNG bytes (background transparent); ``jpeg``: JPEG bytes on the background colour;
    ``face_box``: (x, y, width, height) of the chosen face in the EXIF-oriented input image;
    ``face_count``: faces found (the largest is used); ``jpeg_cap_met``: False when the JPEG could
    not be brought under ``max_jpeg_kb``; ``output_size``: (width, height) of both outputs.
    """

    png: bytes
    jpeg: bytes
    face_box: tuple[int, int, int, int]
    face_count: int
    jpeg_cap_met: bool
    output_size: tuple[int, int]


def _first_bytes(array: np.ndarray) -> bytes:
    value = np.asarray(array).reshape(-1)[0]
    return bytes(value) if not isinstance(value, bytes) else value


def result_from_outputs(get_output: Callable[[str], np.ndarray | None]) -> PortraitResult:
    """Build a ``PortraitResult`` from ``get_output(name) -> numpy array`` (tritonclient's ``as_numpy``)."""
    arrays = {}
    for name in ("PNG", "JPEG", "FACE_BOX", "FACE_COUNT", "JPEG_CAP_MET", "OUTPUT_SIZE"):
        array = get_output(name)
        if array is None:
            raise ValueError(f"the server response has no output {name!r}")
        arrays[name] = np.asarray(array)
    box = arrays["FACE_BOX"].reshape(-1).astype(int)
    size = arrays["OUTPUT_SIZE"].reshape(-1).astype(int)
    return PortraitResult(
        png=_first_bytes(arrays["PNG"]),
        jpeg=_first_bytes(arrays["JPEG"]),
        face_box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        face_count=int(arrays["FACE_COUNT"].reshape(-1)[0]),
        jpeg_cap_met=bool(arrays["JPEG_CAP_MET"].reshape(-1)[0]),
        output_size=(int(size[0]), int(size[1])),
    )
