"""PyTorch module → ONNX file with fixed tensor names, a dynamic batch axis (and dynamic height and
width where the spec has ``-1``), metadata_props, and the swap model's emap initializer."""

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
EMAP_INITIALIZER = "emap"
# Names of the dynamic height/width axes: input and output differ by the model's scale.
SPATIAL_AXES = {"input": ("height", "width"), "output": ("out_height", "out_width")}


def _axes(tensor, role: str) -> dict[int, str]:
    axes = {0: BATCH_AXIS}
    if tensor.dynamic:
        rank = len(tensor.shape) + 1
        axes.update({rank - 2: SPATIAL_AXES[role][0], rank - 1: SPATIAL_AXES[role][1]})
    return axes


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, opset: int = DEFAULT_OPSET) -> None:
    """Trace ``model`` (eval, fp32) to ``path``: inputs/outputs named as in ``spec``, batch dynamic,
    and height/width dynamic for tensors whose spec has ``-1`` there."""
    dummy = tuple(torch.zeros(spec.input_shape(tensor, 2)) for tensor in spec.inputs)
    names = [tensor.name for tensor in spec.inputs]
    dynamic_axes = {tensor.name: _axes(tensor, "input") for tensor in spec.inputs}
    dynamic_axes[spec.output.name] = _axes(spec.output, "output")
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
    """Declare the output's fixed non-batch dims (the tracer leaves some of them symbolic) and name
    its dynamic ones."""
    import onnx

    model = onnx.load(str(path))
    (output,) = model.graph.output
    dims = output.type.tensor_type.shape.dim
    spatial = iter(SPATIAL_AXES["output"])
    rank = len(spec.output.shape)
    for index, (dim, size) in enumerate(zip(dims[1:], spec.output.shape, strict=True)):
        dim.Clear()
        if size == -1:
            dim.dim_param = next(spatial) if index >= rank - 2 else f"dim{index + 1}"
        else:
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


def append_emap(path: Path, emap) -> None:
    """Store the float32 ``[512, 512]`` ``emap`` as the graph's **last** initializer (named
    ``emap``, used by no node), where insightface's ``inswapper_128.onnx`` keeps it and where
    ``facecraft.pipeline.swap.read_emap`` reads it. Raises ``ValueError`` on another shape."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    emap = np.asarray(emap, dtype=np.float32)
    if emap.shape != (512, 512):
        raise ValueError(f"emap must be [512, 512], got {list(emap.shape)}")
    model = onnx.load(str(path))
    kept = [init for init in model.graph.initializer if init.name != EMAP_INITIALIZER]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.initializer.append(numpy_helper.from_array(emap, EMAP_INITIALIZER))
    onnx.save(model, str(path))
