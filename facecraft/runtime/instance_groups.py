"""Apply an ``InstancePlan`` (facecraft.runtime.instance_plan) to the ``config.pbtxt`` files of a repository.

CPU hosts: every model gets ``KIND_CPU`` instances; the ONNX models (``codeformer``, ``u2net``:
backend ``onnxruntime``) also get ``intra_op_thread_count`` and ``max_batch_size: 1`` (one image
per execution, no arena shrinkage). GPU hosts: the ONNX models get ``KIND_GPU`` instances; Python models stay
``KIND_CPU``. Ensembles have no instance groups and are left alone.

The edits are pure functions on Triton's ``ModelConfig`` message (facecraft.runtime.model_config):
each returns an edited copy. ``configure_repository`` parses every config with the Protocol Buffers
text-format parser and writes the ones a plan changes in canonical form (comments are not kept: the
runtime copy is generated; a config the plan leaves as it is is not rewritten).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from facecraft.runtime.instance_plan import InstancePlan, model_filename
from facecraft.runtime.model_config import (
    ConfigEditError,
    ModelConfig,
    ModelInstanceGroup,
    format_config,
    load_config,
)

KINDS = ("KIND_CPU", "KIND_GPU")
ONNX_BACKENDS = ("onnxruntime",)
ONNX_PLATFORMS = ("onnxruntime_onnx",)
ENSEMBLE_PLATFORM = "ensemble"
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"
# TensorRT builds its engines on the first load (minutes for CodeFormer); the cache keeps them
# across restarts: a path inside the NGC container (the `trt-cache` volume of docker-compose.yml).
TRT_ENGINE_CACHE = "/trt-cache"


def set_precision(config: ModelConfig, precision: str) -> ModelConfig:
    """A copy of ``config`` served from the ``precision`` export: ``default_model_filename``
    ``model.<precision>.onnx`` (cleared for fp32, Triton's default ``model.onnx``)."""
    edited = _copy(config)
    edited.default_model_filename = "" if precision == "fp32" else model_filename(precision)
    return edited


def use_tensorrt(config: ModelConfig, cache_path: str = TRT_ENGINE_CACHE) -> ModelConfig:
    """A copy of ``config`` with ONNX Runtime's TensorRT accelerator (Triton's native onnxruntime
    backend): ``precision_mode`` FP16, engine cache on at ``cache_path``, 4 GiB workspace."""
    edited = _copy(config)
    accelerators = edited.optimization.execution_accelerators.gpu_execution_accelerator
    del accelerators[:]
    tensorrt = accelerators.add(name="tensorrt")
    tensorrt.parameters["precision_mode"] = "FP16"
    tensorrt.parameters["max_workspace_size_bytes"] = str(4 << 30)
    tensorrt.parameters["trt_engine_cache_enable"] = "1"
    tensorrt.parameters["trt_engine_cache_path"] = cache_path
    return edited


def _copy(config: ModelConfig) -> ModelConfig:
    edited = ModelConfig()
    edited.CopyFrom(config)
    return edited


def is_ensemble(config: ModelConfig) -> bool:
    """True for ensemble configs (``platform: "ensemble"``)."""
    return config.platform == ENSEMBLE_PLATFORM


def is_onnx_model(config: ModelConfig) -> bool:
    """True for configs served by ONNX Runtime (``backend: "onnxruntime"`` or the ONNX platform)."""
    return config.backend in ONNX_BACKENDS or config.platform in ONNX_PLATFORMS


def current_count(config: ModelConfig) -> int | None:
    """The ``count`` of the first ``instance_group``; None without one (or with no count set)."""
    return (config.instance_group[0].count or None) if config.instance_group else None


def configure_instance_groups(config: ModelConfig, kind: str, count: int) -> ModelConfig:
    """A copy of ``config`` whose instance groups are one group of ``count`` × ``kind``.

    ``kind``: ``KIND_CPU`` or ``KIND_GPU``; ``count``: an integer ≥ 1 (``ConfigEditError`` otherwise).
    Every existing instance group is replaced. Ensembles come back unchanged.
    """
    if kind not in KINDS:
        raise ConfigEditError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigEditError(f"instance count must be an integer >= 1, got {count!r}")
    edited = _copy(config)
    if is_ensemble(config):
        return edited
    del edited.instance_group[:]
    edited.instance_group.add(kind=ModelInstanceGroup.Kind.Value(kind), count=count)
    return edited


def set_string_parameter(config: ModelConfig, key: str, value: str) -> ModelConfig:
    """A copy of ``config`` with the ``parameters`` entry ``key`` set to the string ``value``
    (replaced where it exists, else added); ``ConfigEditError`` for an empty key."""
    if not key:
        raise ConfigEditError("parameter key must not be empty")
    edited = _copy(config)
    edited.parameters[key].string_value = value
    return edited


def one_image_per_execution(config: ModelConfig) -> ModelConfig:
    """A copy of ``config`` with ``max_batch_size: 1``, no ``preferred_batch_size`` and no arena
    shrinkage parameter.

    The dynamic batcher's preferred sizes are not a cap (Triton still forms larger batches from a
    long queue), so the cap is the model's ``max_batch_size``. The ``dynamic_batching`` block itself
    stays (and is not added where absent): requests still queue in Triton's scheduler, with its
    statistics. Ensembles with ``max_batch_size: 1`` accept composing models with 1. Arena shrinkage
    only pays when large batches can grow the arena; at one image it gives memory back that the next
    run allocates again (measured: U²-Net 1484 → 1665 ms, CodeFormer 10.25 → 10.96 s on one thread).
    """
    edited = _copy(config)
    edited.max_batch_size = 1
    if edited.HasField("dynamic_batching"):
        del edited.dynamic_batching.preferred_batch_size[:]
    edited.parameters.pop(ARENA_SHRINKAGE, None)
    return edited


@dataclass(frozen=True)
class ModelPlacement:
    """What ``configure_repository`` wrote for one model (``threads``: ONNX intra-op threads)."""

    model: str
    kind: str | None
    count: int | None
    threads: int | None = None
    precision: str | None = None

    def describe(self) -> str:
        if not self.kind:
            return "ensemble (unchanged)"
        threads = f", {self.threads} thread(s) each" if self.threads else ""
        precision = (
            f", {self.precision} ({model_filename(self.precision)})"
            if self.precision not in (None, "fp32")
            else ""
        )
        return f"{self.count} x {self.kind}{threads}{precision}"


def configure_model(
    config: ModelConfig, plan: InstancePlan, model: str, *, drives_onnx: bool = False
) -> tuple[ModelConfig, ModelPlacement]:
    """(edited copy, placement) for the config of ``model`` under ``plan``; ensembles come back unchanged.

    ONNX models: ``plan.onnx_instances`` × KIND_GPU (GPU plans) or KIND_CPU, ``intra_op_thread_count``
    when the plan sets threads, one image per execution when the plan asks for it. Other models:
    KIND_CPU × ``plan.python_instances`` (else the committed count, else 1). ``drives_onnx``: a
    Python step of an ensemble whose ONNX models it calls by BLS (:func:`bls_steps`); on a plan
    with one image per execution it also gets one request per execution and, unless the plan
    sets ``python_instances``, at least ``plan.onnx_instances`` instances — its BLS calls are
    synchronous, so one instance keeps one ONNX instance busy at a time, and a dynamic batch of
    queued requests handed to one instance would run them one after the other while the others idle.
    """
    if is_ensemble(config):
        return _copy(config), ModelPlacement(model, None, None)
    if is_onnx_model(config):
        kind = "KIND_GPU" if plan.device == "gpu" else "KIND_CPU"
        instances, threads = plan.placement_for(model)
        edited = configure_instance_groups(config, kind, instances)
        if threads:
            edited = set_string_parameter(edited, "intra_op_thread_count", str(threads))
        if plan.one_image_per_run:
            edited = one_image_per_execution(edited)
        edited = set_precision(edited, plan.precision_for(model))  # fp32 unless the plan says otherwise
        if plan.device == "gpu" and plan.gpu_accelerator == "tensorrt":
            edited = use_tensorrt(edited)
        precision = plan.precision_for(model)
        return edited, ModelPlacement(model, kind, instances, threads, precision)
    count = plan.python_instances or current_count(config) or 1
    if drives_onnx and plan.one_image_per_run:
        count = plan.python_instances or max(count, plan.onnx_instances)
        edited = one_image_per_execution(configure_instance_groups(config, "KIND_CPU", count))
        return edited, ModelPlacement(model, "KIND_CPU", count)
    return configure_instance_groups(config, "KIND_CPU", count), ModelPlacement(model, "KIND_CPU", count)


def bls_steps(configs: dict[str, ModelConfig]) -> frozenset[str]:
    """The Python steps (by model name) of ``configs`` (model name → config of one repository)
    that drive ONNX models by BLS, from the processors registry (``facecraft.processors``): a
    processor whose ``models`` include ONNX models (of the repository, or exportable ones of
    ``facecraft.export.catalog`` not exported yet) that are no step of its ensembles has them
    called by the Python steps of those ensembles (e.g. ``face_enhancer``: ``faces`` and
    ``face_enhance``, which calls ``codeformer``). Ensembles missing from ``configs`` are skipped."""
    from facecraft import processors as registry
    from facecraft.export.catalog import MODEL_NAMES

    steps: set[str] = set()
    for processor in registry.PROCESSORS.values():
        ensembles = [configs[name] for name in processor.ensembles if name in configs]
        members = {step.model_name for e in ensembles for step in e.ensemble_scheduling.step}
        called = [
            m
            for m in processor.models
            if m not in members and (m in MODEL_NAMES or (m in configs and is_onnx_model(configs[m])))
        ]
        if called:
            steps |= {m for m in members if m in configs and not is_onnx_model(configs[m])}
    return frozenset(steps)


def link_repository(source: Path, output: Path) -> Path:
    """Create ``output`` mirroring ``source``'s models: config files copied, other entries symlinked."""
    source = Path(source).resolve()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=False)
    for model_dir in sorted(path for path in source.iterdir() if path.is_dir()):
        if not (model_dir / "config.pbtxt").is_file():
            continue
        target = output / model_dir.name
        target.mkdir()
        for entry in model_dir.iterdir():
            if entry.name == "config.pbtxt":
                shutil.copy2(entry, target / entry.name)
            elif entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    return output


def configure_repository(
    repo: Path, plan: InstancePlan, *, output: Path | None = None
) -> list[ModelPlacement]:
    """Rewrite every ``<model>/config.pbtxt`` of ``repo`` for ``plan`` (in place or into ``output``).

    With ``output`` (which must not exist), only a runtime copy is edited: its ``config.pbtxt``
    files are copies, everything else in a model folder (version directories with ``model.onnx`` /
    ``model.py``) is a symlink into ``repo``, so large exports are not duplicated. A config the plan
    changes is written in canonical text format (``model_config.format_config``, without comments),
    atomically; the others are left byte for byte. Every config is parsed and edited before anything
    is written, so a config that does not parse (``ConfigEditError`` naming the file and the parse
    error) leaves ``repo`` untouched and ``output`` not created; so does a plan precision whose
    export (``<model>/1/model.<precision>.onnx``) is missing (``ConfigEditError`` with the export
    command). Returns one placement per model, in folder-name order.
    """
    repo = Path(repo)
    edits = []
    configs = {path.parent.name: load_config(path) for path in sorted(repo.glob("*/config.pbtxt"))}
    drivers = bls_steps(configs)
    for name, config in configs.items():
        config_path = repo / name / "config.pbtxt"
        edited, placement = configure_model(config, plan, name, drives_onnx=name in drivers)
        if placement.precision not in (None, "fp32"):
            version = config_path.parent / "1" / model_filename(placement.precision)
            if not version.is_file():
                raise ConfigEditError(
                    f"{placement.model}: precision {placement.precision} needs {version}: run "
                    f"`facecraft export {placement.model} --precision {placement.precision}`"
                )
        edits.append((config_path.parent.name, edited if edited != config else None, placement))
    onnx_models = {p.model for _, _, p in edits if p.precision is not None}
    unknown = sorted({m for m, _ in plan.precisions if m != "*"} - onnx_models)
    if unknown:
        raise ConfigEditError(
            f"--precision names {', '.join(unknown)}, not ONNX models of {repo} "
            f"({', '.join(sorted(onnx_models)) or 'none'})"
        )
    target = repo if output is None else link_repository(repo, Path(output))
    for model, edited, _ in edits:
        if edited is not None:
            config_path = target / model / "config.pbtxt"
            temporary = config_path.with_name("config.pbtxt.tmp")
            temporary.write_text(format_config(edited))
            temporary.replace(config_path)
    return [placement for _, _, placement in edits]
