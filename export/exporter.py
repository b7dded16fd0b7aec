"""Export a model (``MODEL_NAMES``) to ``<repo>/<model>/1/model.onnx`` with parity check and record.

Steps: resolve weights (official / local path / seeded random) → trace to a temp ONNX file in the
target folder → parity + batch-independence check (fails the export) → metadata_props → rename to
``model.onnx`` → ``export.json``. On any failure the temp file is removed and an existing
``model.onnx`` is left untouched.

The ONNX-only models (``ONNX_ONLY``: ArcFace ``w600k_r50``, ``inswapper_128``) have no official
PyTorch weights: their official (or a given ``.onnx``) file is installed as published after a
contract check (``onnx_install``); their seeded random stand-ins are traced from our definitions
like every other model, the swap model with a seeded random ``emap`` as its last initializer.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecraft import __version__
from facecraft.export import weights as weights_mod
from facecraft.export.catalog import (
    COMMITTED_CONFIGS,
    CONFIG_TEMPLATES,
    LICENCES,
    NON_COMMERCIAL,
    ONNX_ONLY,
    REALESRGAN_MODELS,
)
from facecraft.export.metadata import MODEL_VERSION, metadata_path, write_json_atomic
from facecraft.export.models import (
    MODEL_NAMES,
    ModelSpec,
    UnknownModelError,
    build_model,
    parameter_count,
    random_model,
    resolve,
)
from facecraft.export.onnx_export import (
    DEFAULT_OPSET,
    append_emap,
    convert_to_fp16,
    export_onnx,
    set_metadata_props,
)
from facecraft.export.onnx_install import install_onnx
from facecraft.export.parity import BATCH_TOLERANCE, ParityReport, check_parity
from facecraft.export.temporaries import remove_stale, temporary_path

__all__ = ["MODEL_NAMES", "ExportResult", "UntrainedWeightsWarning", "WeightsChoice", "export_model"]

# Parity batch sizes: tiny models check 1 and 4; full ones 1 and 3 (CodeFormer ≈ 405 GMAC/image).
PARITY_BATCHES = {"tiny": (1, 4), "full": (1, 3)}


class UntrainedWeightsWarning(UserWarning):
    """The exported model has random weights: its output is not a real restoration/segmentation."""


@dataclass
class WeightsChoice:
    """Where the network's weights came from."""

    source: str  # "official" | "path" | "random"
    trained: bool
    path: str | None = None
    seed: int | None = None
    note: str = ""
    url: str | None = None  # where official weights were downloaded from
    sha256: str | None = None  # of the checkpoint file (None for random weights)


@dataclass
class ExportResult:
    onnx_path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return bool(self.metadata.get("trained"))


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[export] {message}", file=sys.stderr, flush=True)


def untrained_banner(spec: ModelSpec, seed: int, reason: str) -> str:
    return (
        f"!!! {spec.name} ({spec.variant}, {spec.preset}) is UNTRAINED: random weights, seed {seed}. "
        f"{reason} Its output is NOT a real result. !!!"
    )


def _random(spec: ModelSpec, seed: int, reason: str, progress: bool) -> tuple[nn.Module, WeightsChoice]:
    model = random_model(spec, seed)
    banner = untrained_banner(spec, seed, reason)
    warnings.warn(banner, UntrainedWeightsWarning, stacklevel=3)
    _say(progress, banner)
    return model, WeightsChoice("random", trained=False, seed=seed, note=reason)


# Checkpoint container key of a local ``.pth`` for the models whose official files use one.
CHECKPOINT_KEYS = {"codeformer": "params_ema", **dict.fromkeys(REALESRGAN_MODELS, "params_ema")}


def random_emap(seed: int) -> np.ndarray:
    """The seeded random float32 [512, 512] emap of an untrained swap stand-in (N(0, 1/512))."""
    return np.random.default_rng(seed).normal(0.0, 512**-0.5, size=(512, 512)).astype(np.float32)


def published_onnx(
    spec: ModelSpec,
    weights: str,
    *,
    progress: bool = True,
    on_progress: weights_mod.ProgressCallback | None = None,
) -> tuple[Path, WeightsChoice] | None:
    """For an ONNX-only model: the published file to install (official download or a ``.onnx``
    path), or None when ``weights`` means a traced export (random, a ``.pth``, the tiny preset,
    or ``auto`` with the download host unreachable)."""
    if spec.name not in ONNX_ONLY or weights == "random":
        return None
    if weights in ("auto", "official"):
        if spec.preset != "full":
            return None  # load_weights explains (no official tiny weights)
        entry = weights_mod.OFFICIAL_WEIGHTS[spec.variant]
        try:
            _say(progress, f"official ONNX file {entry.filename} ({entry.source})")
            fetched = weights_mod.fetch_official(spec.variant, progress=progress, on_progress=on_progress)
        except weights_mod.DownloadError as error:
            if weights == "auto" and error.offline:
                return None
            raise
        choice = WeightsChoice(
            "official", trained=True, path=str(fetched.path), url=fetched.url, sha256=fetched.sha256
        )
        return fetched.path, choice
    path = Path(weights).expanduser()
    if path.suffix.lower() != ".onnx":
        return None
    return path, WeightsChoice("path", trained=True, path=str(path), sha256=weights_mod.sha256_of(path))


def load_weights(
    spec: ModelSpec,
    weights: str,
    seed: int,
    *,
    progress: bool = True,
    on_progress: weights_mod.ProgressCallback | None = None,
) -> tuple[nn.Module, WeightsChoice]:
    """Build the network for ``spec`` with ``weights`` = ``auto`` | ``official`` | ``random`` | PATH.

    ``auto`` tries the official checkpoint (cache, then download) and falls back to seeded random
    weights with an ``UntrainedWeightsWarning`` only when the download host cannot be reached (or,
    for a preset other than ``full``, when no mirror serves it: ``weights.weights_location``).
    ``on_progress(bytes, total)`` follows a download. Raises ``WeightsError`` subclasses for a
    missing/corrupt file or a wrong architecture.
    """
    if weights == "random":
        return _random(spec, seed, "Chosen with --weights random.", progress)
    url = None
    if weights in ("auto", "official"):
        if spec.preset != "full" and weights_mod.mirror_url() is None:
            if weights == "official":
                weights_mod.weights_location(spec.variant, spec.preset)  # raises, naming the mirror
            return _random(spec, seed, f"The {spec.preset!r} preset has no official weights.", progress)
        entry = weights_mod.OFFICIAL_WEIGHTS[spec.variant]
        if entry.format == "onnx":  # reached only when published_onnx found the host unreachable
            return _random(
                spec,
                seed,
                "Official ONNX file unavailable (download host unreachable, or no published file for this preset).",
                progress,
            )
        try:
            _say(progress, f"official weights {entry.filename} ({entry.source})")
            fetched = weights_mod.fetch_official(
                spec.variant, preset=spec.preset, progress=progress, on_progress=on_progress
            )
        except weights_mod.DownloadError as error:
            if weights == "auto" and error.offline:
                return _random(spec, seed, f"Official weights unavailable ({error}).", progress)
            raise
        path, url, sha256 = fetched.path, fetched.url, fetched.sha256
        source, label = "official", entry.filename
    else:
        path = Path(weights).expanduser()
        source, label = "path", str(path)
        sha256 = weights_mod.sha256_of(path) if path.is_file() else None
    torch.manual_seed(seed)
    model = build_model(spec)
    state = weights_mod.read_state_dict(path, CHECKPOINT_KEYS.get(spec.name))
    weights_mod.load_strict(model, state, label=label)
    return model.eval(), WeightsChoice(source, trained=True, path=str(path), url=url, sha256=sha256)


def write_derived_config(repo: Path, name: str) -> Path | None:
    """Write ``<repo>/<name>/config.pbtxt`` for a model whose config is derived
    (``catalog.CONFIG_TEMPLATES``): the template model's config in ``repo`` with the name changed,
    so the tensors and the instance placement are the template's. An existing config is kept.
    Returns the path written, or None. Raises ``UnknownModelError`` when the template is missing.
    """
    target = Path(repo) / name / "config.pbtxt"
    if name in COMMITTED_CONFIGS and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name("config.pbtxt.tmp")
        temporary.write_text(COMMITTED_CONFIGS[name].read_text())
        temporary.replace(target)
        return target
    template = CONFIG_TEMPLATES.get(name)
    if template is None or target.is_file():
        return None
    from facecraft.runtime.model_config import format_config, load_config

    source = Path(repo) / template / "config.pbtxt"
    if not source.is_file():
        raise UnknownModelError(f"{name}: its config is derived from {source}, which does not exist")
    config = load_config(source)
    config.name = name
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name("config.pbtxt.tmp")
    temporary.write_text(
        f"# Written by `facecraft export {name}` from {template}/config.pbtxt (same tensors).\n"
        + format_config(config)
    )
    temporary.replace(target)
    return target


def _publish(tmp: Path, final: Path, props: dict[str, str], doc: str) -> tuple[str, int]:
    """Write ``props``/``doc`` into the finished temporary ONNX file and rename it to ``final``;
    returns (sha256, bytes) of what was published."""
    set_metadata_props(tmp, props, doc=doc)
    sha256, onnx_bytes = weights_mod.sha256_of(tmp), tmp.stat().st_size
    os.replace(tmp, final)
    return sha256, onnx_bytes


def export_model(
    name: str,
    *,
    variant: str | None = None,
    preset: str = "full",
    weights: str = "auto",
    seed: int = 0,
    fp16: bool = False,
    repo: Path = Path("model_repository"),
    opset: int | None = None,
    progress: bool = True,
    on_progress: weights_mod.ProgressCallback | None = None,
    precision: str = "fp32",
    calibration_photos: Path | None = None,
) -> ExportResult:
    """Export one model (``catalog.MODEL_NAMES``) into the Triton repository ``repo``.

    ``u2net_general`` / ``u2netp`` also get a ``config.pbtxt`` derived from ``u2net``'s, and the
    face-swap / frame-enhancer models their committed one (:func:`write_derived_config`), once
    their ONNX file is in place. ``on_progress`` follows a weights download. Raises
    ``UnknownModelError`` (bad name/variant/preset, ``fp16`` for Real-ESRGAN), ``WeightsError``
    subclasses, or ``ParityError``; nothing partial is left in ``repo`` in those cases.

    ``precision``: ``fp32`` → ``model.onnx`` + ``export.json``; ``fp16`` (same as ``fp16=True``) →
    ``model.fp16.onnx`` + ``export.fp16.json``; ``int8`` → the fp32 export first, then its static
    QDQ quantisation (``facecraft.export.quantize``, calibrated on ``calibration_photos``, default
    the shared face photos less the benchmark's ``HELD_OUT_PHOTOS``) → ``model.int8.onnx`` +
    ``export.int8.json``. Deployments pick a
    precision with ``--precision`` (``default_model_filename`` in the runtime config). Also raises
    ``QuantizationError`` or ``ValueError`` (unknown precision).
    """
    from facecraft.export.quantize import model_filename

    model_filename(precision)  # validates
    if fp16:
        precision = "fp16"
    if precision == "int8":
        return _export_int8(
            name, variant=variant, preset=preset, weights=weights, seed=seed, repo=repo, opset=opset,
            progress=progress, calibration_photos=calibration_photos, on_progress=on_progress,
        )  # fmt: skip
    fp16 = precision == "fp16"
    spec = resolve(name, variant, preset)
    if fp16 and spec.name in REALESRGAN_MODELS:
        raise UnknownModelError(
            f"{spec.name}: --fp16 is not offered (float16 RRDBNet is known to overflow to NaN in "
            "conv_up1); export it in float32"
        )
    opset = opset or DEFAULT_OPSET
    started = time.perf_counter()
    if (
        spec.name in CONFIG_TEMPLATES
        and not (Path(repo) / CONFIG_TEMPLATES[spec.name] / "config.pbtxt").is_file()
    ):
        raise UnknownModelError(
            f"{spec.name}: its config is derived from {CONFIG_TEMPLATES[spec.name]}/config.pbtxt, "
            f"which {repo} does not have"
        )
    final = Path(repo) / spec.name / MODEL_VERSION / model_filename(precision)
    published = published_onnx(spec, weights, progress=progress, on_progress=on_progress)
    if published is not None:
        return _install_published(
            spec, *published, final=final, repo=Path(repo), started=started, progress=progress
        )
    if spec.name == "inswapper_128" and weights not in ("auto", "official", "random"):
        raise weights_mod.WeightsError(
            f"{weights}: a PyTorch state dict holds no emap; pass the published inswapper_128.onnx "
            "(its emap is the last initializer) instead"
        )
    model, choice = load_weights(spec, weights, seed, progress=progress, on_progress=on_progress)
    params = parameter_count(model)
    tmp = _temporary_target(final, progress)
    try:
        _say(
            progress,
            f"{spec.name}/{spec.variant} preset {spec.preset}: {params:,} parameters; tracing to ONNX (opset {opset})",
        )
        step = time.perf_counter()
        export_onnx(model, spec, tmp, opset=opset)
        if spec.name == "inswapper_128":
            append_emap(tmp, random_emap(seed))  # only random stand-ins are traced (see below)
        if fp16:
            _say(progress, "converting to float16 (float32 inputs/outputs kept)")
            convert_to_fp16(tmp)
        export_seconds = time.perf_counter() - step
        batches = PARITY_BATCHES[spec.preset]
        _say(progress, f"exported in {export_seconds:.1f}s; parity check at batch sizes {batches}")
        report: ParityReport = check_parity(
            model, tmp, spec, batch_sizes=batches, fp16=fp16, seed=seed, log=lambda m: _say(progress, m)
        )
        _say(progress, report.summary())
        props = {
            "facecraft.model": spec.name,
            "facecraft.variant": spec.variant,
            "facecraft.preset": spec.preset,
            "facecraft.weights_source": choice.source,
            "facecraft.trained": str(choice.trained).lower(),
            "facecraft.seed": "" if choice.seed is None else str(choice.seed),
            "facecraft.parameter_count": str(params),
            "facecraft.fp16": str(fp16).lower(),
            "facecraft.precision": precision,
            "facecraft.version": __version__,
        }
        doc = spec.description + ("" if choice.trained else " -- UNTRAINED (random weights)")
        sha256, onnx_bytes = _publish(tmp, final, props, doc)
    finally:
        tmp.unlink(missing_ok=True)

    record = _record(
        spec,
        choice,
        started,
        parameter_count=params,
        onnx_sha256=sha256,
        onnx_bytes=onnx_bytes,
        opset=opset,
        fp16=fp16,
        precision=precision,
        parity=report.as_dict(),
        export_seconds=round(export_seconds, 2),
    )
    write_json_atomic(metadata_path(Path(repo) / spec.name, precision), record)
    write_derived_config(Path(repo), spec.name)
    return ExportResult(onnx_path=final, metadata=record)


def _temporary_target(final: Path, progress: bool) -> Path:
    """Create ``final``'s folder, remove temporaries left by a killed export, and return a new
    temporary path beside ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale(final, "tmp"):
        _say(progress, f"removed {stale.name}, left by an export that was killed")
    return temporary_path(final, "tmp")


def _record(spec: ModelSpec, choice: WeightsChoice, started: float, **fields) -> dict:
    """The ``export.json`` record: the fields every export has, then ``fields``."""
    import onnx

    return {
        "model": spec.name,
        "variant": spec.variant,
        "preset": spec.preset,
        "weights_source": choice.source,
        "weights_path": choice.path,
        "weights_url": choice.url,
        "weights_sha256": choice.sha256,
        "trained": choice.trained,
        "untrained_reason": None if choice.trained else choice.note,
        "seed": choice.seed,
        "inputs": {t.name: ["B", *t.shape] for t in spec.inputs},
        "outputs": {spec.output.name: ["B", *spec.output.shape]},
        **fields,
        "total_seconds": round(time.perf_counter() - started, 2),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "facecraft_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "licence": licence_record(spec.name),
    }


def licence_record(name: str) -> dict:
    """``{"name", "commercial_use"}`` of the model's published weights (``catalog.LICENCES``)."""
    return {"name": LICENCES[name], "commercial_use": name not in NON_COMMERCIAL}


def _install_published(
    spec: ModelSpec,
    source: Path,
    choice: WeightsChoice,
    *,
    final: Path,
    repo: Path,
    started: float,
    progress: bool,
) -> ExportResult:
    """Install a published ONNX file (``onnx_install.install_onnx``) and write its record."""
    tmp = _temporary_target(final, progress)
    try:
        _say(progress, f"installing {source} as {final} (published ONNX; contract check)")
        report = install_onnx(source, tmp, spec, label=str(source))
        sha256 = weights_mod.sha256_of(tmp)
        onnx_bytes = tmp.stat().st_size
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    checked = report.batch_independence_max_abs_diff
    parity = ParityReport(
        max_abs_diff={},
        tolerance=BATCH_TOLERANCE,
        batch_independence_max_abs_diff=checked or 0.0,
        batch_independence_tolerance=BATCH_TOLERANCE,
        providers=["CPUExecutionProvider"] if checked is not None else [],
        seconds=0.0,
        passed=True,
    )
    record = _record(
        spec,
        choice,
        started,
        parameter_count=None,
        source_sha256=weights_mod.sha256_of(source),
        installed_as_published=not (report.renamed or report.batch_made_dynamic),
        renamed_io=report.renamed,
        batch_made_dynamic=report.batch_made_dynamic,
        onnx_sha256=sha256,
        onnx_bytes=onnx_bytes,
        opset=None,
        fp16=False,
        precision="fp32",
        parity=parity.as_dict(),
        export_seconds=0.0,
    )
    write_json_atomic(metadata_path(repo / spec.name), record)
    write_derived_config(repo, spec.name)
    return ExportResult(onnx_path=final, metadata=record)


def default_calibration_photos() -> Path:
    """The shared face photos (``../shared/data/faces`` beside the checkout)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def _export_int8(
    name: str,
    *,
    variant: str | None,
    preset: str,
    weights: str,
    seed: int,
    repo: Path,
    opset: int | None,
    progress: bool,
    calibration_photos: Path | None,
    on_progress: weights_mod.ProgressCallback | None = None,
) -> ExportResult:
    """fp32 export (parity-checked), then int8 QDQ quantisation of it into ``model.int8.onnx``."""
    from facecraft.export.quantize import (
        HELD_OUT_PHOTOS,
        QuantizationError,
        calibration_inputs,
        model_filename,
        quantize_int8,
    )

    fp32 = export_model(
        name, variant=variant, preset=preset, weights=weights, seed=seed, repo=repo, opset=opset,
        progress=progress, on_progress=on_progress,
    )  # fmt: skip
    spec = resolve(name, variant, preset)
    photo_dir = Path(calibration_photos or default_calibration_photos())
    photos = sorted(p for p in photo_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if calibration_photos is None:  # the default set: the benchmark's photos stay held out
        photos = [p for p in photos if p.name not in HELD_OUT_PHOTOS]
    if not photos:
        raise QuantizationError(f"no calibration photos (*.jpg, *.png) in {photo_dir}")
    step = time.perf_counter()
    feeds = calibration_inputs(spec, photos)
    final = fp32.onnx_path.with_name(model_filename("int8"))
    tmp = temporary_path(final, "tmp")
    try:
        _say(
            progress,
            f"int8: static QDQ quantisation, per-channel, calibrated on {len(feeds)} inputs from {photo_dir}",
        )
        kept = quantize_int8(fp32.onnx_path, tmp, feeds)
        props = {
            "facecraft.model": spec.name,
            "facecraft.variant": spec.variant,
            "facecraft.preset": spec.preset,
            "facecraft.weights_source": fp32.metadata["weights_source"],
            "facecraft.trained": str(fp32.trained).lower(),
            "facecraft.precision": "int8",
            "facecraft.fp32_sha256": fp32.metadata["onnx_sha256"],
            "facecraft.version": __version__,
        }
        doc = spec.description + " -- int8 QDQ" + ("" if fp32.trained else " -- UNTRAINED (random weights)")
        sha256, onnx_bytes = _publish(tmp, final, props, doc)
    finally:
        tmp.unlink(missing_ok=True)
    record = {
        **{k: v for k, v in fp32.metadata.items() if k not in ("parity", "onnx_sha256", "onnx_bytes")},
        "precision": "int8",
        "fp16": False,
        "onnx_sha256": sha256,
        "onnx_bytes": onnx_bytes,
        "fp32_onnx_sha256": fp32.metadata["onnx_sha256"],
        "quantization": {
            "format": "QDQ",
            "weights": "int8, symmetric, per output channel",
            "activations": "uint8, asymmetric, MinMax calibration",
            "calibration_inputs": len(feeds),
            "calibration_photos": str(photo_dir),
            "calibration_files": [p.name for p in photos],
            "fp32_nodes": kept,
            "seconds": round(time.perf_counter() - step, 2),
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(metadata_path(Path(repo) / spec.name, "int8"), record)
    _say(progress, f"int8: {final} ({onnx_bytes / 2**20:.1f} MiB; fp32 kept for {len(kept)} node(s))")
    return ExportResult(onnx_path=final, metadata=record)
