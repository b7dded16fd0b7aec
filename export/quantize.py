"""int8 static quantisation of an exported fp32 ONNX model (ONNX Runtime QDQ, per-channel).

``quantize_int8(fp32_path, out_path, spec, photos)`` writes ``model.int8.onnx`` beside the fp32
``model.onnx``: QuantizeLinear/DequantizeLinear pairs around the weights (int8, symmetric, one
scale per output channel) and activations (uint8, asymmetric, MinMax ranges) of Conv, MatMul and
the other operators ONNX Runtime's QDQ quantiser handles, calibrated on real face photos run
through the pipeline's own pre-processing (U²-Net: ``prepare_segmentation``; CodeFormer: detect →
``prepare_face`` at fidelity 0, 0.5 and 1).

Kept in fp32 (``fp32_nodes``): CodeFormer's **codebook lookup** — the code-prediction head
(``idx_pred_layer``: LayerNorm + Linear → logits, fp32 weights, reading the transformer's
dequantised output), the nodes from it to ``ArgMax`` and the ``Gather`` of
``quantize.embedding.weight``. An argmax over quantised logits picks other codes (a different
face), and a quantised codebook shifts every looked-up feature. U²-Net's output head (the
1-channel side convolutions, their fusion, the sigmoid) stays fp32 too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facecraft.runtime.instance_plan import PRECISIONS, model_filename

if TYPE_CHECKING:
    from facecraft.export.models import ModelSpec

__all__ = [
    "PRECISIONS",
    "QuantizationError",
    "calibration_inputs",
    "fp32_nodes",
    "model_filename",
    "quantize_int8",
]

CODEBOOK_PREFIX = "/idx_pred_layer/"
# U²-Net's output head: the 1-channel side convolutions, their fusion and the sigmoid. Cheap (a few
# MMAC), and quantising them coarsens the map the alpha is cut from.
HEAD_PREFIXES = ("/side", "/outconv/", "/Sigmoid")
# None: every operator ONNX Runtime's QDQ quantiser handles. Restricting it to Conv/MatMul/Gemm
# measured slower (full U²-Net, 1 thread, loaded machine: 2.6× instead of 4.3× over fp32: the
# QDQ pairs around the activations are what lets ORT fuse Conv+ReLU chains into int8 kernels)
# and no closer to fp32.
QUANTIZED_OPS: tuple[str, ...] | None = None
CALIBRATION_FIDELITIES = (0.0, 0.5, 1.0)
# Held out of the default calibration set: the benchmark's photos (facecraft.bench.harness), on
# which `facecraft bench-precision` measures the int8 models' deviation from fp32.
HELD_OUT_PHOTOS = (
    "fr__obama_small.jpg",
    "dlib__Tom_Cruise_avp_2014_4.jpg",
    "cf__Einstein01.png",
    "fr__obama-1080p.jpg",
    "hiv__test0.jpg",
    "cf__Hepburn01.png",
)


class QuantizationError(RuntimeError):
    """No calibration input could be made (no photo with a detectable face), or ORT failed."""


def fp32_nodes(model) -> list[str]:
    """Names of the nodes of an ONNX ``ModelProto`` that must stay fp32: CodeFormer's codebook
    lookup (the ``idx_pred_layer`` head, every node between it and ``ArgMax``, ``ArgMax`` and each
    ``Gather`` reading an initializer, i.e. an embedding table). Empty for U²-Net."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    keep: set[str] = {
        node.name for node in graph.node if node.name.startswith((CODEBOOK_PREFIX, *HEAD_PREFIXES))
    }
    for node in graph.node:
        if node.op_type == "Gather" and node.input and node.input[0] in initializers:
            keep.add(node.name)
        if node.op_type != "ArgMax":
            continue
        keep.add(node.name)
        pending = [producer[name] for name in node.input if name in producer]
        while pending:  # back to the head: Transpose/Reshape between the logits and the argmax
            upstream = pending.pop()
            if upstream.name in keep:
                continue
            keep.add(upstream.name)
            pending += [producer[name] for name in upstream.input if name in producer]
            if len(keep) > len(graph.node):  # pragma: no cover - a cycle cannot occur in a valid graph
                break
    if any(node.op_type == "ArgMax" for node in graph.node):
        # the backward walk stops at the head only if the head exists; without it, keep the argmax path short
        head = {node.name for node in graph.node if node.name.startswith(CODEBOOK_PREFIX)}
        if not head:
            keep = {name for name in keep if _is_lookup(graph, name)}
    return sorted(keep)


def _is_lookup(graph, name: str) -> bool:
    node = next(n for n in graph.node if n.name == name)
    return node.op_type in ("ArgMax", "Gather")


def calibration_inputs(spec: ModelSpec, photos: Iterable[Path]) -> list[dict[str, np.ndarray]]:
    """Network inputs (batch 1, float32, the ONNX input names) made from ``photos`` by the pipeline's
    pre-processing. Photos that do not decode or (CodeFormer) show no face are skipped. Raises
    ``QuantizationError`` when none is left."""
    from facecraft.pipeline.decode import decode_image
    from facecraft.pipeline.errors import PipelineError

    feeds: list[dict[str, np.ndarray]] = []
    for path in photos:
        try:
            rgb = decode_image(Path(path).read_bytes()).rgb
            if spec.name != "codeformer":  # the U²-Net models
                from facecraft.pipeline.segment import prepare_segmentation

                feeds.append({"input": prepare_segmentation(rgb)[None].astype(np.float32)})
                continue
            from facecraft.pipeline.align import prepare_face
            from facecraft.pipeline.detect import detect_face

            face, _ = prepare_face(rgb, detect_face(rgb).landmarks)
            for w in CALIBRATION_FIDELITIES:
                feeds.append({"input": face[None].astype(np.float32), "w": np.array([[w]], np.float32)})
        except PipelineError:
            continue
    if not feeds:
        raise QuantizationError(f"no calibration input for {spec.name}: no usable face photo")
    return feeds


class _Feeds:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    feeds: list[dict[str, np.ndarray]],
    op_types: Iterable[str] | None = QUANTIZED_OPS,
) -> list[str]:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path`` (static, per-channel int8 weights,
    uint8 activations, MinMax calibration over ``feeds``). Returns the node names kept fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(_Feeds, CalibrationDataReader):
        pass

    keep = fp32_nodes(onnx.load(str(fp32_path), load_external_data=False))
    silenced = logging.root.manager.disable
    logging.disable(logging.WARNING)  # ORT's quantiser warns per node on the root logger
    try:
        quantize_static(
            str(fp32_path),
            str(out_path),
            Reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep,
            op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    except Exception as error:  # ORT raises plain Exceptions from its quantiser
        Path(out_path).unlink(missing_ok=True)
        raise QuantizationError(f"int8 quantisation of {fp32_path} failed: {error}") from error
    finally:
        logging.disable(silenced)
    return keep
