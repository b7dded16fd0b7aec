"""Machine facts for the benchmark: description, conv-throughput probe, ONNX MAC counts, peak RSS."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecraft.runtime.host import cpu_model, usable_cores

# DESIGN §9 reference figures for the full preset (MACs per image).
REFERENCE_GMAC = {"codeformer": 405.0, "u2net": 58.6}


def describe_machine() -> dict:
    """CPU model, cores, memory, GPU (nvidia-smi if present) and library versions."""
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    gpu = None
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if completed.returncode == 0 and completed.stdout.strip():
            gpu = completed.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu_model() or "",
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": memory_gib,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in (
        "onnxruntime",
        "onnxruntime-gpu",
        "tritonclient",
        "nvidia-pytriton",
        "numpy",
        "dlib-bin",
        "torch",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class ConvProbe:
    """Measured fp32 conv throughput of onnxruntime on this machine."""

    gflops: float
    gmac_per_run: float
    seconds_per_run: float
    provider: str
    shape: str


def _timed_runs(run: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``run`` (``time.perf_counter``), after one untimed
    warm-up call."""
    run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def conv_probe(device: str = "cpu", repeats: int = 5, channels: int = 256, size: int = 96) -> ConvProbe:
    """Time a big 3×3 convolution ``[1,C,S,S] * [C,C,3,3]`` in onnxruntime; best of ``repeats``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.01
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
    )
    providers = [p for p in providers if p in ort.get_available_providers()]
    session = ort.InferenceSession(model.SerializeToString(), providers=providers)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    best = min(_timed_runs(lambda: session.run(None, {"x": x}), repeats))
    gmac = channels * channels * 9 * size * size / 1e9
    return ConvProbe(
        gflops=2 * gmac / best,
        gmac_per_run=gmac,
        seconds_per_run=best,
        provider=session.get_providers()[0],
        shape=f"[1,{channels},{size},{size}] conv3x3 -> {channels} ch",
    )


def model_seconds_per_image(onnx_path: Path, threads: int, runs: int = 2) -> list[float]:
    """Seconds per image of one onnxruntime CPU session of ``onnx_path`` with ``threads`` intra-op
    threads, alone: ``runs`` timed runs after one warm-up, at batch 1 (every dynamic dimension 1) on
    seeded inputs — uniform in [-1, 1] for image tensors (rank ≥ 3), 0.7 for the others (e.g.
    CodeFormer's fidelity weight ``w`` [1, 1]). A convolutional network's time does not depend on
    the pixel values (denormals aside, which ``session.set_denormal_as_zero`` showed not to matter
    for CodeFormer and U²-Net here), so this is the speed the model itself reaches on these cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        feed[meta.name] = (
            rng.uniform(-1, 1, shape).astype(np.float32)
            if len(shape) >= 3
            else np.full(shape, 0.7, np.float32)
        )
    return _timed_runs(lambda: session.run(None, feed), runs)


def count_onnx_macs(onnx_path: Path) -> float:
    """Multiply-accumulates of one sample (batch 1) through the graph: Conv, ConvTranspose, MatMul,
    Gemm.

    Shapes come from ONNX Runtime's symbolic shape inference
    (``onnxruntime.tools.symbolic_shape_infer``) with every dynamic input dimension set to 1. onnx's
    own ``infer_shapes`` loses every shape after a ``Pad`` whose pads are computed (torch's
    ``F.pad`` export), and an unknown dimension read as 1 undercounted CodeFormer by 17 %: 337.1 of
    its 404.8 GMAC (DESIGN §9 quotes ≈ 405; onnxruntime's profiler, summing each Conv node's
    shapes in a real run, gives the same 400.8 GMAC of convolutions). Raises ``ValueError`` when
    shape inference fails, or naming the nodes whose shapes stay unknown, rather than leaving
    them out of the count.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(onnx_path), load_external_data=False)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as error:  # the tool raises TypeError/AssertionError/... on graphs it cannot follow
        raise ValueError(
            f"cannot count the MACs of {onnx_path}: shape inference failed: {error!r}"
        ) from error
    shapes: dict[str, list[int | None]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for initializer in inferred.graph.initializer:
        shapes[initializer.name] = list(initializer.dims)

    def known(name: str) -> list[int] | None:
        dims = shapes.get(name)
        return dims if dims and None not in dims else None

    total, unknown = 0.0, []
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        first, second, output = known(node.input[0]), known(node.input[1]), known(node.output[0])
        if not (first and second and output):
            unknown.append(node.name or node.output[0])
        elif node.op_type == "Conv":
            # weight [C_out, C_in/groups, k...]
            total += float(np.prod(output)) * second[1] * int(np.prod(second[2:]))
        elif node.op_type == "ConvTranspose":
            # weight [C_in, C_out/groups, k...]: every input element feeds C_out/groups * k outputs
            total += float(np.prod(first)) * second[1] * int(np.prod(second[2:]))
        else:
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            total += float(np.prod(output)) * (first[-2] if transposed else first[-1])
    if unknown:
        raise ValueError(
            f"cannot count the MACs of {onnx_path}: shape inference left the shapes of "
            f"{len(unknown)} node(s) unknown: {', '.join(unknown[:5])}"
        )
    return total


def peak_rss_of_tree(root_pid: int, field: str = "VmHWM") -> dict[str, float]:
    """Peak resident memory (``field`` VmHWM, MiB; ``"VmRSS"``: the current one) of ``root_pid``
    and every descendant, keyed ``name[pid]``.

    Read from ``/proc``; Triton's Python backend stubs are children of the server process.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    result: dict[str, float] = {}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = fields.get("Name", "?").strip()
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            argv = []
        # backend stubs get <repo>/<model>/<version>/model.py|model.onnx: label them by model
        model_file = next(
            (a.decode(errors="replace") for a in argv[1:3] if a.rsplit(b"/", 1)[-1].startswith(b"model.")),
            None,
        )
        if model_file:
            name = f"stub:{Path(model_file).parent.parent.name}"
        hwm = fields.get(field, "0 kB").split()[0]
        result[f"{name}[{pid}]"] = round(int(hwm) / 1024, 1)
        stack.extend(children.get(pid, []))
    return result
