"""PyTorch vs onnxruntime parity and batch independence of an exported model.

Guarantees checked after every export (failures raise ``ParityError``):

- for each batch size, ``max |torch(x) - onnxruntime(x)| <= tolerance`` on the same seeded random
  inputs (valid ranges, see ``models.example_inputs``);
- batch independence: for the largest batch, onnxruntime's result for item ``i`` equals (within
  ``batch_tolerance``) the result of running item ``i`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecraft.export.models import ModelSpec, example_inputs

# Max abs difference allowed, by (model, fp16). fp32 figures leave ~10x headroom over what random
# and official weights give here; CodeFormer's codebook argmax can flip on a near tie, which shows
# as one changed code (a large local difference) and fails the export loudly rather than silently.
TOLERANCES: dict[tuple[str, bool], float] = {
    ("codeformer", False): 2e-3,
    ("u2net", False): 1e-3,
    ("codeformer", True): 5e-2,
    ("u2net", True): 2e-2,
}


class ParityError(RuntimeError):
    """The ONNX model disagrees with PyTorch (or across batch items) beyond the tolerance."""


@dataclass
class ParityReport:
    max_abs_diff: dict[int, float]
    tolerance: float
    batch_independence_max_abs_diff: float
    batch_independence_tolerance: float
    providers: list[str]
    seconds: float
    passed: bool

    def as_dict(self) -> dict:
        record = asdict(self)
        record["max_abs_diff"] = {str(batch): diff for batch, diff in self.max_abs_diff.items()}
        return record

    def summary(self) -> str:
        diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in self.max_abs_diff.items())
        return f"parity max|diff| {diffs} (tol {self.tolerance:.0e}); batch independence {self.batch_independence_max_abs_diff:.2e}"


def _session(onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(onnx_path), options, providers=providers)


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    spec: ModelSpec,
    *,
    batch_sizes: Sequence[int],
    fp16: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = lambda _message: None,
) -> ParityReport:
    """Compare ``model`` (fp32, eval) with the ONNX file; raise ``ParityError`` beyond tolerance."""
    started = time.perf_counter()
    tolerance = TOLERANCES[(spec.name, fp16)]
    session = _session(onnx_path)
    diffs: dict[int, float] = {}
    largest_feeds: dict[str, np.ndarray] = {}
    largest_out = np.empty(0)
    for batch in batch_sizes:
        feeds = example_inputs(spec, batch, seed=seed + batch)
        log(f"parity: batch {batch}: PyTorch")
        with torch.inference_mode():
            expected = model(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs)).numpy()
        log(f"parity: batch {batch}: onnxruntime")
        (actual,) = session.run([spec.output.name], feeds)
        if actual.shape != (batch, *spec.output.shape):
            raise ParityError(f"ONNX output shape {actual.shape} != expected {(batch, *spec.output.shape)}")
        diffs[batch] = float(np.max(np.abs(actual.astype(np.float32) - expected)))
        if batch == max(batch_sizes):
            largest_feeds, largest_out = feeds, actual
    batch_tolerance = tolerance if fp16 else 1e-4
    independence = 0.0
    big = max(batch_sizes)
    if big > 1:
        log(f"parity: batch independence over {big} items")
        for item in range(big):
            single = {name: value[item : item + 1] for name, value in largest_feeds.items()}
            (alone,) = session.run([spec.output.name], single)
            independence = max(independence, float(np.max(np.abs(alone[0] - largest_out[item]))))
    passed = max(diffs.values()) <= tolerance and independence <= batch_tolerance
    report = ParityReport(
        max_abs_diff=diffs,
        tolerance=tolerance,
        batch_independence_max_abs_diff=independence,
        batch_independence_tolerance=batch_tolerance,
        providers=list(session.get_providers()),
        seconds=round(time.perf_counter() - started, 2),
        passed=passed,
    )
    if not passed:
        raise ParityError(f"{spec.name} ONNX export failed the parity check: {report.summary()}")
    return report
