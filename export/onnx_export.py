"""PyTorch module → ONNX file with fixed tensor names, a dynamic batch axis and metadata_props."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from facecraft.export.models import ModelSpec

# Opset 17: GroupNorm/LayerNorm/Resize all export with the TorchScript exporter and run on
# onnxruntime >= 1.14 and the ONNX Runtime backends of Triton 23.x and later.
DEFAULT_OPSET = 17
BATCH_AXIS = "batch"


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, opset: int = DEFAULT_OPSET) -> None:
    """Trace ``model`` (eval, fp32) to ``path``: inputs/outputs named as in ``spec``, batch dynamic."""
    dummy = tuple(torch.zeros((2, *tensor.shape)) for tensor in spec.inputs)
    names = [tensor.name for tensor in spec.inputs]
    dynamic_axes = {name: {0: BATCH_AXIS} for name in [*names, spec.output.name]}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # Tracer warnings about shapes turned into constants are expected: all non-batch dims are fixed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            dummy,
            str(path),
            input_names=names,
            output_names=[spec.output.name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    _pin_output_shape(path, spec)


def _pin_output_shape(path: Path, spec: ModelSpec) -> None:
    """Declare the output's fixed non-batch dims (the tracer leaves some of them symbolic)."""
    import onnx

    model = onnx.load(str(path))
    (output,) = model.graph.output
    dims = output.type.tensor_type.shape.dim
    for dim, size in zip(dims[1:], spec.output.shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    dims[0].Clear()
    dims[0].dim_param = BATCH_AXIS
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def convert_to_fp16(path: Path) -> None:
    """Rewrite the ONNX file with float16 weights/compute, keeping float32 graph inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(path))


def set_metadata_props(path: Path, props: dict[str, str], *, doc: str) -> None:
    """Replace the ONNX file's ``metadata_props`` (string key/values) and ``doc_string``."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.doc_string = doc
    model.producer_name = "facecraft"
    onnx.save(model, str(path))
