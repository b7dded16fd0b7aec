"""The ``export.json`` record next to each exported ``model.onnx``.

Layout: ``<repo>/<model>/1/model.onnx`` and ``<repo>/<model>/1/export.json``. Triton ignores the
JSON; the gateway's ``/status`` and the launcher's log read it to report e.g. untrained weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METADATA_FILENAME = "export.json"
MODEL_VERSION = "1"

# Keys of the record (all always present):
# model, variant, preset, weights_source ("official" | "path" | "random"), weights_path (or None),
# trained (bool), seed (int or None), parameter_count, onnx_sha256, onnx_bytes, opset, fp16,
# input/output (ONNX names and shapes, batch axis "B"), parity (ParityReport.as_dict(): per batch
# size max_abs_diff, logits_max_abs_diff and codes; tolerances, batch independence, passed,
# failures; see docs/export.md),
# created (UTC ISO 8601), facecraft_version, torch_version, onnx_version.


def metadata_path(model_dir: Path, precision: str = "fp32") -> Path:
    """``<model_dir>/1/export.json`` (fp32), ``export.<precision>.json`` for fp16 / int8 exports."""
    name = METADATA_FILENAME if precision == "fp32" else f"export.{precision}.json"
    return Path(model_dir) / MODEL_VERSION / name


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write JSON to a temp file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_export_metadata(model_dir: Path) -> dict | None:
    """The export record of ``model_dir`` (``<repo>/<model>``), or None when there is none.

    A present but unreadable file also gives None: callers report the model as of unknown origin.
    """
    path = metadata_path(model_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
