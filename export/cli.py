"""``facecraft export <model>|all``: ONNX export into the Triton model repository."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from facecraft.cli import CliError
from facecraft.export.catalog import DEFAULT_EXPORTS, MODEL_NAMES

TARGETS = (*MODEL_NAMES, "all")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the ONNX models (CodeFormer, U2-Net, ArcFace, inswapper, Real-ESRGAN) to the Triton repository",
        description="Export a model to <repo>/<model>/1/model.onnx with a "
        "PyTorch-vs-onnxruntime parity check and an export.json record. `all` is "
        f"{' + '.join(DEFAULT_EXPORTS)}; u2net_general (U2NET, u2net.pth) and u2netp (U2NETP, "
        "u2netp.pth) are exported by name and get a config.pbtxt derived from u2net's. "
        "arcface_w600k_r50, inswapper_128 (non-commercial licence) and realesrgan_x4plus/x2plus are "
        "exported by name and get their committed config.pbtxt; the first two are published as ONNX "
        "only, so their official file is installed as published.",
    )
    parser.add_argument("model", choices=TARGETS, help="which model to export")
    parser.add_argument(
        "--variant",
        choices=("u2net_human_seg", "u2net", "u2netp"),
        default=None,
        help="weights of the `u2net` model (default u2net_human_seg); ignored for the other models",
    )
    parser.add_argument(
        "--preset", choices=("full", "tiny"), default="full", help="full (official) or tiny (tests)"
    )
    parser.add_argument(
        "--weights",
        default="auto",
        metavar="auto|official|random|PATH",
        help="auto: official, else seeded random (UNTRAINED) when offline; official: fail if unavailable; "
        "random: seeded random (UNTRAINED); PATH: a local checkpoint file (.pth, or .onnx for "
        "arcface_w600k_r50 / inswapper_128)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and parity inputs")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="fp32 (default): model.onnx; fp16: model.fp16.onnx, float16 weights/compute, float32 I/O "
        "(GPU); int8: the fp32 export, then static QDQ int8 quantisation, per-channel, calibrated on "
        "--calibration-photos -> model.int8.onnx (CPU). Deployments choose with --precision too",
    )
    parser.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    parser.add_argument(
        "--calibration-photos",
        type=Path,
        default=None,
        metavar="DIR",
        help="int8 calibration photos (default: ../shared/data/faces)",
    )
    parser.add_argument("--repo", type=Path, default=Path("model_repository"), help="model repository folder")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facecraft.export.exporter import ExportResult, UntrainedWeightsWarning, export_model
    from facecraft.export.models import UnknownModelError
    from facecraft.export.parity import ParityError
    from facecraft.export.weights import WeightsError

    names = DEFAULT_EXPORTS if args.model == "all" else (args.model,)
    if args.weights not in ("auto", "official", "random") and not Path(args.weights).expanduser().is_file():
        raise CliError(f"weights file not found: {args.weights}")
    if args.weights not in ("auto", "official", "random") and len(names) > 1:
        raise CliError("a weights file fits one model: export the models separately")
    if args.opset is not None and not 13 <= args.opset <= 21:
        raise CliError(f"--opset {args.opset} is outside the supported range 13..21")

    from facecraft.export.quantize import QuantizationError

    if args.fp16 and args.precision not in (None, "fp16"):
        raise CliError(f"--fp16 contradicts --precision {args.precision}")
    precision = "fp16" if args.fp16 else (args.precision or "fp32")
    results: list[ExportResult] = []
    for name in names:
        variant = args.variant if name == "u2net" else None
        try:
            with warnings.catch_warnings():
                # The exporter prints its own banner for untrained weights.
                warnings.simplefilter("ignore", UntrainedWeightsWarning)
                result = export_model(
                    name,
                    variant=variant,
                    preset=args.preset,
                    weights=args.weights,
                    seed=args.seed,
                    precision=precision,
                    calibration_photos=args.calibration_photos,
                    repo=args.repo,
                    opset=args.opset,
                    progress=True,
                )
        except (UnknownModelError, WeightsError, ParityError, QuantizationError) as error:
            raise CliError(f"{name}: {error}") from error
        results.append(result)
        print(summary_line(result), file=sys.stdout, flush=True)
    return 0


def summary_line(result) -> str:
    """One line: where, what, parity figures, and UNTRAINED when random weights were used."""
    meta = result.metadata
    status = "trained" if meta["trained"] else f"UNTRAINED (random weights, seed {meta['seed']})"
    licence = meta.get("licence") or {}
    terms = "" if licence.get("commercial_use", True) else f"; licence: {licence['name']}"
    if "installed_as_published" in meta:  # a published ONNX file, installed
        renamed = meta.get("renamed_io") or {}
        changes = f", I/O renamed {renamed}" if renamed else ""
        return (
            f"installed {meta['model']} ({meta['variant']}, published ONNX{changes}) -> {result.onnx_path}; "
            f"weights: {meta['weights_source']}, {status}{terms}"
        )
    if meta.get("precision") == "int8":
        q = meta["quantization"]
        return (
            f"exported {meta['model']} ({meta['variant']}, {meta['preset']}, int8 QDQ, per-channel, "
            f"{q['calibration_inputs']} calibration inputs, {len(q['fp32_nodes'])} node(s) kept fp32) -> "
            f"{result.onnx_path}; weights: {meta['weights_source']}, {status}"
        )
    parity = meta["parity"]
    diffs = ", ".join(f"b{batch}={diff:.1e}" for batch, diff in parity["max_abs_diff"].items())
    return (
        f"exported {meta['model']} ({meta['variant']}, {meta['preset']}, {meta['parameter_count']:,} params, "
        f"{'fp16' if meta['fp16'] else 'fp32'}) -> {result.onnx_path}; parity max|diff| {diffs} "
        f"<= {parity['tolerance']:.0e}; weights: {meta['weights_source']}, {status}{terms}"
    )
