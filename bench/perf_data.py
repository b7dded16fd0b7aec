"""perf_analyzer ``--input-data`` JSON for the portrait ensembles.

perf_analyzer copies a ``b64`` payload verbatim into the request, so for a BYTES tensor the
payload must already be Triton's serialised form: per element a 4-byte little-endian length
followed by the bytes. ``IMAGE`` has dims ``[1]`` (one element, batch dim excluded), hence
``"shape": [1]`` and a single length-prefixed image per entry. Options are not included, so the
ensemble applies its defaults (perf_analyzer treats them as optional inputs).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable
from pathlib import Path


def serialize_bytes_element(data: bytes) -> bytes:
    """Triton's wire form of one BYTES element: ``uint32 little-endian length`` + bytes."""
    return struct.pack("<I", len(data)) + data


def perf_input_entry(image_bytes: bytes) -> dict:
    """One ``data`` entry: ``{"IMAGE": {"content": {"b64": ...}, "shape": [1]}}``."""
    payload = base64.b64encode(serialize_bytes_element(image_bytes)).decode("ascii")
    return {"IMAGE": {"content": {"b64": payload}, "shape": [1]}}


def build_perf_input_data(images: Iterable[bytes]) -> dict:
    """The whole ``--input-data`` document; perf_analyzer uses the entries round-robin."""
    entries = [perf_input_entry(image) for image in images]
    if not entries:
        raise ValueError("no images to put in the perf_analyzer input data")
    return {"data": entries}


def write_perf_input_data(image_paths: list[Path], out_path: Path) -> int:
    """Write the JSON for ``image_paths`` to ``out_path`` atomically; returns the number of entries."""
    from facecraft.client.batch import write_atomically

    document = build_perf_input_data(path.read_bytes() for path in image_paths)
    write_atomically(out_path, json.dumps(document).encode("ascii"))
    return len(document["data"])
