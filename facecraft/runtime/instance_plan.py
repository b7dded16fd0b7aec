"""How many instances of each model a host should run, and how many threads each ONNX instance gets.

CPU hosts (measured on 2 cores, docs/benchmarks.md): onnxruntime is more efficient with one
thread per core-sized share than with every core on one session (U²-Net: 2 single-thread
sessions side by side 707 ms/image vs one 2-thread session 832 ms/image; CodeFormer 4.94 s vs
5.25 s), and the cores a model instance leaves idle while the Python steps run are picked up by
the other instance. So the CPU plan runs several ONNX instances with ``cores / instances``
threads each, and one image per execution (``max_batch_size: 1``): on CPU a batch costs the same
per image as single images, and a large batch handed to one single-thread instance would leave
the others idle (measured: 8 enhanced requests at c16 took 1.5× as long with batching left on).

GPU hosts keep the committed batching (batches are what a GPU is fast at) and one instance of
each ONNX model per GPU by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "fp16", "int8")
# GPU accelerators of the ONNX models: "cuda" = onnxruntime's CUDA execution provider (what the
# embedded runtime's Python-based onnxruntime backend runs); "tensorrt" = the ONNX Runtime
# TensorRT accelerator of Triton's native onnxruntime backend (NGC container), FP16, engine cache.
GPU_ACCELERATORS = ("cuda", "tensorrt")
# Each ONNX instance holds its own copy of the weights and working memory (full CodeFormer or
# U²-Net: up to 1.7 GiB resident per instance at one image per execution), so the automatic plan
# stops at four.
MAX_AUTO_ONNX_INSTANCES = 4
CORES_PER_PYTHON_INSTANCE = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def model_filename(precision: str) -> str:
    """The export a model of ``precision`` is served from: ``model.onnx`` (fp32) or
    ``model.<precision>.onnx`` (fp16, int8). Raises ``ValueError`` for an unknown precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"


class InstancePlanError(ValueError):
    """Instance or thread counts that cannot be honoured (not positive, unknown device)."""


@dataclass(frozen=True)
class InstancePlan:
    """What ``configure_repository`` writes into each model's ``config.pbtxt``.

    - ``onnx_instances``: instances of each ONNX model (``codeformer``, ``u2net``);
    - ``onnx_threads``: onnxruntime intra-op threads per ONNX instance (config parameter
      ``intra_op_thread_count``); None leaves onnxruntime's default (every core);
    - ``python_instances``: instances of each Python model; None keeps the committed count;
    - ``one_image_per_run``: the ONNX models run one image per execution (``max_batch_size: 1``,
      no arena shrinkage; see ``instance_groups.one_image_per_execution``).
    """

    device: str
    onnx_instances: int
    onnx_threads: int | None
    python_instances: int | None
    one_image_per_run: bool
    cores: int
    precisions: tuple[tuple[str, str], ...] = ()
    gpu_accelerator: str = "cuda"
    # per ONNX model: (model, instances, threads) in place of onnx_instances / onnx_threads
    overrides: tuple[tuple[str, int, int | None], ...] = ()

    def placement_for(self, model: str) -> tuple[int, int | None]:
        """(instances, onnxruntime threads per instance) of ONNX model ``model``."""
        for name, instances, threads in self.overrides:
            if name == model:
                return instances, threads
        return self.onnx_instances, self.onnx_threads

    def precision_for(self, model: str) -> str:
        """The precision ONNX model ``model`` is served at (``fp32`` unless the plan says otherwise)."""
        chosen = dict(self.precisions)
        return chosen.get(model, chosen.get("*", "fp32"))

    def describe(self) -> str:
        threads = (
            f"{self.onnx_threads} thread(s) each" if self.onnx_threads else "onnxruntime's default threads"
        )
        python = (
            f"{self.python_instances} instance(s) of each Python model"
            if self.python_instances
            else "committed Python model instances"
        )
        if self.one_image_per_run:
            bls = self.python_instances or f"{self.onnx_instances} (one per ONNX instance)"
            python += f", {bls} of each Python step calling ONNX models by BLS, one request per execution"
        batching = "one image per execution" if self.one_image_per_run else "committed batching"
        precision = ", ".join(f"{'every ONNX model' if m == '*' else m} {p}" for m, p in self.precisions)
        accelerator = f", {self.gpu_accelerator} accelerator" if self.device == "gpu" else ""
        overrides = "".join(
            f"; {model}: {count} instance(s) with {t or 'default'} thread(s) each"
            for model, count, t in self.overrides
        )
        return (
            f"{self.device} plan for {self.cores} core(s): {self.onnx_instances} instance(s) of each ONNX "
            f"model with {threads}, {batching}{accelerator}, precision {precision or 'fp32'}{overrides}; {python}"
        )


def parse_precision(text: str | None) -> tuple[tuple[str, str], ...]:
    """``--precision`` → ((model, precision), ...), ``"*"`` standing for every ONNX model.

    ``int8`` (every ONNX model), or per model: ``u2net=int8`` / ``int8,codeformer=fp32`` (later
    entries win). Raises ``InstancePlanError`` for an unknown precision or an empty model name."""
    if not text or not text.strip():
        return ()
    chosen: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        model, equals, precision = part.rpartition("=")
        if precision not in PRECISIONS:
            raise InstancePlanError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if equals and not model.strip():
            raise InstancePlanError(f"--precision {part!r}: a model name goes before '='")
        chosen[model.strip() or "*"] = precision
    if chosen.get("*", "fp32") == "fp32":
        chosen.pop("*", None)
        chosen = {m: p for m, p in chosen.items() if p != "fp32"}
    return tuple(sorted(chosen.items()))


def cgroup_core_limit(cpu_max: Path | None = None) -> int | None:
    """Cores allowed by a cgroup v2 CPU quota (``cpu.max`` = "QUOTA PERIOD" or "max PERIOD"), rounded
    up; None without a quota."""
    try:
        quota, period = (cpu_max or CGROUP_CPU_MAX).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a container's cgroup quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_core_limit()
    return max(1, min(cores, limit) if limit else cores)


def _check_positive(value: int | None, name: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InstancePlanError(f"{name} must be a positive integer, got {value!r}")


def auto_onnx_instances(cores: int) -> int:
    """ONNX instances for a CPU host: one on 1 core, two on 2-11 cores, then one per four cores, at
    most ``MAX_AUTO_ONNX_INSTANCES``."""
    return min(cores, max(2, min(cores // 4, MAX_AUTO_ONNX_INSTANCES)))


def plan_instances(
    device: str,
    *,
    cores: int | None = None,
    instances: int | None = None,
    onnx_threads: int | None = None,
    python_instances: int | None = None,
    precision: str | None = None,
    gpu_accelerator: str = "cuda",
) -> InstancePlan:
    """The plan for ``device`` on a host with ``cores`` (default: ``usable_cores()``); explicit
    ``instances`` / ``onnx_threads`` / ``python_instances`` override the automatic choice.
    ``precision``: see :func:`parse_precision` (default fp32 everywhere); ``gpu_accelerator``: one of
    ``GPU_ACCELERATORS`` (GPU plans only)."""
    precisions = parse_precision(precision)
    if gpu_accelerator not in GPU_ACCELERATORS:
        raise InstancePlanError(f"gpu accelerator must be one of {GPU_ACCELERATORS}, got {gpu_accelerator!r}")
    if device not in DEVICES:
        raise InstancePlanError(f"device must be one of {DEVICES}, got {device!r}")
    for value, name in ((cores, "cores"), (instances, "instances"), (onnx_threads, "onnx threads"),
                        (python_instances, "python instances")):  # fmt: skip
        _check_positive(value, name)
    cores = cores or usable_cores()
    if python_instances is None and cores >= 2 * CORES_PER_PYTHON_INSTANCE:
        python_instances = cores // CORES_PER_PYTHON_INSTANCE
    if device == "gpu":
        return InstancePlan(
            "gpu", instances or 1, onnx_threads, python_instances, False, cores, precisions, gpu_accelerator
        )
    if instances is None:
        instances = (
            max(1, min(cores // onnx_threads, MAX_AUTO_ONNX_INSTANCES))
            if onnx_threads
            else auto_onnx_instances(cores)
        )
    if onnx_threads is None:
        onnx_threads = max(1, cores // instances)
    return InstancePlan("cpu", instances, onnx_threads, python_instances, True, cores, precisions)
