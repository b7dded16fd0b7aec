"""Install a published ONNX-only model (insightface's ``w600k_r50`` / ``inswapper_128``) as-is.

The authors publish these as ONNX files only, so there is nothing to trace: the verified file
becomes ``<repo>/<model>/1/model.onnx`` after a contract check against ``models.resolve``:

- the graph inputs (initializers excluded) and outputs match the spec in number, element type
  (float32) and fixed non-batch dimensions; matched by name, else by position;
- the swap model keeps its 512×512 ``emap`` as the last initializer;
- tensor names that differ from the spec (the Triton config's names) are renamed in the graph
  (I/O names only; weights and nodes untouched) and a fixed batch dimension of 1 is declared
  dynamic; both are recorded. A renamed or re-batched copy must then give, for each of two
  items, the same result alone and in a batch of two (else ``ArchitectureMismatchError``: the
  graph hard-codes batch 1).

The downloaded file itself stays byte-for-byte in the weights cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecraft.export.models import ModelSpec, example_inputs
from facecraft.export.weights import ArchitectureMismatchError, CorruptCheckpointError
from facecraft.pipeline.swap import emap_of


@dataclass
class InstallReport:
    """What the install changed: I/O renames (published → contract) and whether the batch axis
    had to be declared dynamic; the batch check's max |diff| (None when nothing was changed)."""

    renamed: dict[str, str] = field(default_factory=dict)
    batch_made_dynamic: list[str] = field(default_factory=list)
    batch_independence_max_abs_diff: float | None = None


def _dims(value) -> list[int | str]:
    return [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
        for d in value.type.tensor_type.shape.dim
    ]


def _graph_inputs(model) -> list:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _match(published: list, wanted, kind: str, label: str) -> list[tuple[object, object]]:
    if len(published) != len(wanted):
        raise ArchitectureMismatchError(
            f"{label}: {len(published)} graph {kind}s ({', '.join(v.name for v in published)}), "
            f"the contract has {len(wanted)} ({', '.join(t.name for t in wanted)})"
        )
    by_name = {value.name: value for value in published}
    if all(tensor.name in by_name for tensor in wanted):
        return [(by_name[tensor.name], tensor) for tensor in wanted]
    return list(zip(published, wanted, strict=True))


def _check_value(value, tensor, label: str) -> None:
    import onnx

    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ArchitectureMismatchError(f"{label}: {value.name} is not float32")
    dims = _dims(value)
    if len(dims) != len(tensor.shape) + 1:
        raise ArchitectureMismatchError(
            f"{label}: {value.name} has shape {dims}, the contract is [B, {', '.join(map(str, tensor.shape))}]"
        )
    for got, expected in zip(dims[1:], tensor.shape, strict=True):
        if expected != -1 and got != expected:
            raise ArchitectureMismatchError(
                f"{label}: {value.name} has shape {dims}, the contract is "
                f"[B, {', '.join(map(str, tensor.shape))}]"
            )


def _rename(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.name == old:
            value.name = new


def install_onnx(source: Path, dest: Path, spec: ModelSpec, *, label: str) -> InstallReport:
    """Check ``source`` against ``spec`` and write the installable file to ``dest``.

    Raises ``CorruptCheckpointError`` (not an ONNX file) or ``ArchitectureMismatchError``
    (contract mismatch, no emap, or a graph fixed at batch 1).
    """
    import onnx

    try:
        model = onnx.load(str(source))
    except Exception as error:  # protobuf raises DecodeError and others for a non-ONNX file
        raise CorruptCheckpointError(f"{label} is not a readable ONNX file: {str(error)[:200]}") from error
    report = InstallReport()
    pairs = [
        *_match(_graph_inputs(model), spec.inputs, "input", label),
        *_match(list(model.graph.output), (spec.output,), "output", label),
    ]
    for value, tensor in pairs:
        _check_value(value, tensor, label)
    if spec.name == "inswapper_128":
        try:
            emap_of(model, label)
        except ValueError as error:
            raise ArchitectureMismatchError(str(error)) from error
    for value, tensor in pairs:
        if value.name != tensor.name:
            report.renamed[value.name] = tensor.name
            _rename(model, value.name, tensor.name)
        batch = value.type.tensor_type.shape.dim[0]
        if not batch.dim_param:
            batch.Clear()
            batch.dim_param = "batch"
            report.batch_made_dynamic.append(tensor.name)
    onnx.save(model, str(dest))
    if report.renamed or report.batch_made_dynamic:
        report.batch_independence_max_abs_diff = _batch_check(dest, spec, label)
    return report


def _batch_check(path: Path, spec: ModelSpec, label: str, tolerance: float = 1e-4) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = example_inputs(spec, 2, seed=1)
    try:
        (together,) = session.run([spec.output.name], feeds)
        alone = [
            session.run([spec.output.name], {k: v[i : i + 1] for k, v in feeds.items()})[0] for i in range(2)
        ]
    except Exception as error:  # onnxruntime raises several types for a shape conflict
        raise ArchitectureMismatchError(
            f"{label}: the graph does not run at batch 2 ({str(error).splitlines()[0][:200]}); "
            "it hard-codes batch 1"
        ) from error
    diff = float(np.max(np.abs(np.concatenate(alone) - together)))
    if diff > tolerance:
        raise ArchitectureMismatchError(
            f"{label}: items differ by {diff:.2e} alone vs in a batch of 2 (> {tolerance:.0e})"
        )
    return diff
