"""PyTorch vs onnxruntime parity and batch independence of an exported model.

Guarantees checked after every export (failures raise ``ParityError``, which carries the report):

- for each batch size, ``max |torch(x) - onnxruntime(x)| <= tolerance`` on the same seeded random
  inputs (valid ranges, see ``models.example_inputs``);
- batch independence: for the largest batch, onnxruntime's result for item ``i`` equals (within
  ``batch_tolerance``) the result of running item ``i`` alone.

CodeFormer has a discrete step, the codebook lookup ``argmax(logits)``. Two correct runtimes can
pick different codes where two logits are within rounding of each other (a near tie), and one
changed code changes the output by far more than any tolerance. So for CodeFormer the check
reads onnxruntime's logits and codes (the ArgMax node's input and output, added as graph outputs
to an in-memory copy of the file; the file itself is not changed) and reports three things apart:

- the logits' max |diff| (continuous, ``logits_tolerance``);
- code agreement: tokens whose code differs ("flips"), and the largest PyTorch logit margin
  (its top code's logit minus the logit of onnxruntime's code) among them. A flip is legitimate
  only as a near tie: margin ``<= logits_tolerance``; at most ``MAX_FLIP_FRACTION`` of the tokens;
- the output's max |diff| with PyTorch run on onnxruntime's codes (``CodeFormer.forward_parts``),
  i.e. the continuous parts around the lookup, against ``tolerance``.

Batch independence likewise compares an item alone and in the batch only when their codes agree,
and the flips between the two must be near ties. A model without a discrete step (U²-Net) gets
the plain output comparison, in the same report shape with empty code fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecraft.export.models import ModelSpec, example_inputs

# Max abs difference of the output allowed, by (model, fp16). fp32 figures leave >= 10x headroom
# over what random and official weights give here (CodeFormer: on onnxruntime's codes).
TOLERANCES: dict[tuple[str, bool], float] = {
    ("codeformer", False): 2e-3,
    ("u2net", False): 1e-3,
    ("arcface_w600k_r50", False): 1e-3,
    ("inswapper_128", False): 1e-3,
    ("realesrgan_x4plus", False): 1e-3,
    ("realesrgan_x2plus", False): 1e-3,
    ("codeformer", True): 5e-2,
    ("u2net", True): 2e-2,
    ("arcface_w600k_r50", True): 2e-2,
    ("inswapper_128", True): 2e-2,
}
# Max abs difference of CodeFormer's code logits (measured: tiny fp32 <= 8e-6, fp16 <= 3.3e-3), which
# is also the largest PyTorch margin for which a changed code counts as a near tie.
LOGITS_TOLERANCES: dict[tuple[str, bool], float] = {
    ("codeformer", False): 2e-4,
    ("codeformer", True): 2e-2,
}
# Largest share of tokens whose code may differ (all near ties); more means a systematic error.
MAX_FLIP_FRACTION = 0.01
# Max abs difference between an item run alone and in a batch (fp16: the parity tolerance).
BATCH_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The ONNX model disagrees with PyTorch (or across batch items) beyond the tolerance.

    ``report`` is the full ``ParityReport`` when the comparison ran, else ``None``.
    """

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class CodeAgreement:
    """Codes picked by a reference run vs another run, over ``tokens`` latent tokens.

    ``max_flip_margin`` is the largest reference-logit margin (reference code's logit minus the
    other run's code's logit) among the ``flips`` tokens whose code differs; 0.0 without flips,
    ``inf`` when the other run's code is outside the codebook.
    """

    tokens: int
    flips: int
    max_flip_margin: float

    @property
    def equal_fraction(self) -> float:
        return 1.0 - self.flips / self.tokens if self.tokens else 1.0

    def problems(self, what: str, logits_tolerance: float) -> list[str]:
        """Why these flips are not legitimate near ties (empty when they are)."""
        problems = []
        if self.flips and self.max_flip_margin > logits_tolerance:
            problems.append(
                f"{what}: a changed code is no near tie (logit margin {self.max_flip_margin:.2e} > "
                f"{logits_tolerance:.0e})"
            )
        if self.flips > MAX_FLIP_FRACTION * self.tokens:
            problems.append(
                f"{what}: {self.flips} of {self.tokens} codes differ (more than {MAX_FLIP_FRACTION:.0%})"
            )
        return problems

    def text(self) -> str:
        plural = "s" if self.flips != 1 else ""
        flips = f" ({self.flips} flip{plural}, margin <= {self.max_flip_margin:.1e})" if self.flips else ""
        return f"{self.tokens - self.flips}/{self.tokens}{flips}"

    def as_dict(self) -> dict:
        return {**asdict(self), "equal_fraction": self.equal_fraction}


def code_agreement(
    reference_logits: np.ndarray, reference_codes: np.ndarray, other_codes: np.ndarray
) -> CodeAgreement:
    """Compare ``other_codes`` with ``reference_codes`` (both int ``[B, HW]``).

    ``reference_logits`` ``[B, HW, K]`` float are the scores ``reference_codes`` were picked from
    (their argmax). Raises ``ValueError`` on mismatched shapes.
    """
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    reference_codes, other_codes = np.asarray(reference_codes), np.asarray(other_codes)
    if reference_codes.shape != other_codes.shape or reference_logits.shape[:-1] != reference_codes.shape:
        raise ValueError(
            f"code shapes differ: logits {reference_logits.shape}, codes {reference_codes.shape} "
            f"and {other_codes.shape}"
        )
    flipped = reference_codes != other_codes
    flips = int(flipped.sum())
    margin = 0.0
    if flips:
        size = reference_logits.shape[-1]
        theirs = other_codes[flipped]
        if theirs.min() < 0 or theirs.max() >= size:
            margin = float("inf")
        else:
            scores = reference_logits[flipped]  # flips, K
            rows = np.arange(flips)
            margin = float(np.max(scores[rows, reference_codes[flipped]] - scores[rows, theirs]))
    return CodeAgreement(tokens=int(reference_codes.size), flips=flips, max_flip_margin=margin)


@dataclass
class ParityReport:
    """Everything the check measured; ``as_dict()`` is the ``parity`` record of ``export.json``.

    Per batch size: ``max_abs_diff`` (output; CodeFormer: with PyTorch on onnxruntime's codes),
    ``logits_max_abs_diff`` and ``codes`` (CodeFormer only, else empty). Batch independence over
    the largest batch: output difference over the items whose codes agree alone and in the batch
    (``batch_independence_items_compared`` of them), their logits difference and code agreement.
    ``failures`` lists why ``passed`` is false.
    """

    max_abs_diff: dict[int, float]
    tolerance: float
    batch_independence_max_abs_diff: float
    batch_independence_tolerance: float
    providers: list[str]
    seconds: float
    passed: bool
    logits_max_abs_diff: dict[int, float] = field(default_factory=dict)
    logits_tolerance: float | None = None
    codes: dict[int, CodeAgreement] = field(default_factory=dict)
    max_flip_fraction: float | None = None
    batch_independence_items_compared: int = 0
    batch_independence_logits_max_abs_diff: float | None = None
    batch_independence_codes: CodeAgreement | None = None
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["max_abs_diff"] = {str(batch): diff for batch, diff in self.max_abs_diff.items()}
        record["logits_max_abs_diff"] = {str(b): d for b, d in self.logits_max_abs_diff.items()}
        record["codes"] = {str(batch): codes.as_dict() for batch, codes in self.codes.items()}
        if self.batch_independence_codes is not None:
            record["batch_independence_codes"] = self.batch_independence_codes.as_dict()
        return record

    def summary(self) -> str:
        def per_batch(values: dict, form: Callable) -> str:
            return ", ".join(f"batch {batch}: {form(value)}" for batch, value in values.items())

        on_codes = "; on onnxruntime's codes" if self.codes else ""
        parts = [
            f"parity max|diff| {per_batch(self.max_abs_diff, lambda d: f'{d:.2e}')} "
            f"(tol {self.tolerance:.0e}{on_codes})"
        ]
        if self.codes:
            parts.append(
                f"logits {per_batch(self.logits_max_abs_diff, lambda d: f'{d:.2e}')} "
                f"(tol {self.logits_tolerance:.0e}); codes equal {per_batch(self.codes, CodeAgreement.text)}"
            )
        independence = f"batch independence {self.batch_independence_max_abs_diff:.2e}"
        if self.batch_independence_codes is not None:
            independence += (
                f" over {self.batch_independence_items_compared} items, codes equal "
                f"{self.batch_independence_codes.text()}"
            )
        parts.append(independence)
        return "; ".join(parts)


def _session(model: Path | bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), options, providers=providers
    )


def with_code_outputs(onnx_path: Path) -> tuple[bytes, str, str]:
    """An in-memory copy of CodeFormer's ONNX file whose codebook ArgMax input and output are graph
    outputs too: ``(model bytes, logits name, codes name)``. The file is not changed.

    Raises ``ParityError`` unless the graph has exactly one ArgMax node (the codebook lookup).
    """
    import onnx

    model = onnx.load(str(onnx_path))
    argmax = [node for node in model.graph.node if node.op_type == "ArgMax"]
    if len(argmax) != 1:
        raise ParityError(
            f"expected one ArgMax node (the codebook lookup) in {onnx_path}, found {len(argmax)}"
        )
    logits, codes = argmax[0].input[0], argmax[0].output[0]
    for name in (logits, codes):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model.SerializeToString(), logits, codes


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float32) - b.astype(np.float32)))) if a.size else 0.0


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
    """Compare ``model`` (fp32, eval) with the ONNX file; raise ``ParityError`` on a failure.

    ``model`` must be a ``CodeFormer`` (it needs ``forward_parts``) when ``spec`` is CodeFormer's.
    Inputs are ``example_inputs(spec, batch, seed=seed + batch)`` for each of ``batch_sizes``.
    """
    started = time.perf_counter()
    tolerance = TOLERANCES[(spec.architecture, fp16)]
    batch_tolerance = tolerance if fp16 else BATCH_TOLERANCE
    logits_tolerance = LOGITS_TOLERANCES.get((spec.architecture, fp16))
    discrete = logits_tolerance is not None
    if discrete:  # the copy differs from the file only by its two extra graph outputs
        copy, logits_name, codes_name = with_code_outputs(onnx_path)
        session, fetch = _session(copy), [spec.output.name, logits_name, codes_name]
        del copy  # the full model's bytes: ~376 MB
    else:
        session, fetch = _session(onnx_path), [spec.output.name]

    def run_onnx(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = session.run(fetch, feeds)
        expected_shape = spec.output_shape(feeds[spec.inputs[0].name].shape)
        if results[0].shape != expected_shape:
            raise ParityError(f"ONNX output shape {results[0].shape} != expected {expected_shape}")
        return [results[0].astype(np.float32), *results[1:]]

    report = ParityReport(
        max_abs_diff={},
        tolerance=tolerance,
        batch_independence_max_abs_diff=0.0,
        batch_independence_tolerance=batch_tolerance,
        providers=list(session.get_providers()),
        seconds=0.0,
        passed=False,
        logits_tolerance=logits_tolerance,
        max_flip_fraction=MAX_FLIP_FRACTION if discrete else None,
    )
    failures = report.failures
    big = max(batch_sizes)
    largest: tuple[dict[str, np.ndarray], list[np.ndarray]] = ({}, [])
    for batch in batch_sizes:
        feeds = example_inputs(spec, batch, seed=seed + batch)
        log(f"parity: batch {batch}: onnxruntime")
        actual = run_onnx(feeds)
        log(f"parity: batch {batch}: PyTorch")
        inputs = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
        with torch.inference_mode():
            if discrete:
                logits, codes, expected = (t.numpy() for t in model.forward_parts(*inputs))
                if actual[1].shape != logits.shape:
                    raise ParityError(f"ONNX code logits shape {actual[1].shape} != expected {logits.shape}")
                report.logits_max_abs_diff[batch] = _max_abs(actual[1], logits)
                agreement = report.codes[batch] = code_agreement(logits, codes, actual[2])
                if agreement.flips and np.isfinite(agreement.max_flip_margin):
                    log(
                        f"parity: batch {batch}: {agreement.flips} code flips; PyTorch on onnxruntime's codes"
                    )
                    forced = torch.from_numpy(actual[2].astype(np.int64))
                    expected = model.forward_parts(*inputs, code_indices=forced)[2].numpy()
            else:
                expected = model(*inputs).numpy()
        report.max_abs_diff[batch] = _max_abs(actual[0], expected)
        if report.max_abs_diff[batch] > tolerance:
            failures.append(
                f"batch {batch}: output max|diff| {report.max_abs_diff[batch]:.2e} > {tolerance:.0e}"
            )
        if discrete:
            if report.logits_max_abs_diff[batch] > logits_tolerance:
                failures.append(
                    f"batch {batch}: code logits max|diff| {report.logits_max_abs_diff[batch]:.2e} > "
                    f"{logits_tolerance:.0e}"
                )
            failures += report.codes[batch].problems(f"batch {batch}", logits_tolerance)
        if batch == big:
            largest = (feeds, actual)

    if big > 1:
        log(f"parity: batch independence over {big} items")
        _batch_independence(report, run_onnx, *largest, discrete=discrete)
    report.seconds = round(time.perf_counter() - started, 2)
    report.passed = not failures
    if failures:
        raise ParityError(
            f"{spec.name} ONNX export failed the parity check: {'; '.join(failures)} [{report.summary()}]",
            report,
        )
    return report


def _batch_independence(
    report: ParityReport,
    run_onnx: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    feeds: dict[str, np.ndarray],
    together: list[np.ndarray],
    *,
    discrete: bool,
) -> None:
    """Run each item of ``feeds`` alone and compare with ``together`` (the batch's results)."""
    alone = [
        run_onnx({name: value[item : item + 1] for name, value in feeds.items()})
        for item in range(len(together[0]))
    ]
    same_codes = [True] * len(alone)
    if discrete:
        alone_codes = np.concatenate([result[2] for result in alone])
        agreement = report.batch_independence_codes = code_agreement(together[1], together[2], alone_codes)
        same_codes = [bool(np.array_equal(alone_codes[i], together[2][i])) for i in range(len(alone))]
        logits_diff = _max_abs(np.concatenate([result[1] for result in alone]), together[1])
        report.batch_independence_logits_max_abs_diff = logits_diff
        if logits_diff > report.batch_independence_tolerance:
            report.failures.append(
                f"batch independence: code logits max|diff| {logits_diff:.2e} > "
                f"{report.batch_independence_tolerance:.0e}"
            )
        report.failures += agreement.problems("batch independence", report.logits_tolerance)
    compared = [i for i, same in enumerate(same_codes) if same]
    report.batch_independence_items_compared = len(compared)
    report.batch_independence_max_abs_diff = max(
        (_max_abs(alone[i][0][0], together[0][i]) for i in compared), default=0.0
    )
    if report.batch_independence_max_abs_diff > report.batch_independence_tolerance:
        report.failures.append(
            f"batch independence: output max|diff| {report.batch_independence_max_abs_diff:.2e} > "
            f"{report.batch_independence_tolerance:.0e}"
        )
