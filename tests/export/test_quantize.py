"""int8 export: static QDQ quantisation, per-channel, calibrated on real photos; the codebook lookup
(and U²-Net's output head) stays fp32; ``model.int8.onnx`` + ``export.int8.json`` beside fp32."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from facecraft.export.exporter import UntrainedWeightsWarning, export_model
from facecraft.export.models import example_inputs, resolve
from facecraft.export.quantize import QuantizationError, calibration_inputs, fp32_nodes, model_filename

CALIBRATION = ("cf__Hepburn01.png",)


@pytest.fixture(scope="module")
def int8_repo(tmp_path_factory, faces_dir):
    repo, photos = tmp_path_factory.mktemp("int8-repo"), tmp_path_factory.mktemp("calibration")
    for name in CALIBRATION:
        shutil.copy(faces_dir / name, photos / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        for name in ("u2net", "codeformer"):
            export_model(name, preset="tiny", weights="random", repo=repo, progress=False,
                         precision="int8", calibration_photos=photos)  # fmt: skip
    return repo


def _graph(repo, name, precision="int8"):
    return onnx.load(str(repo / name / "1" / model_filename(precision))).graph


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def test_int8_export_writes_qdq_beside_the_fp32_model(int8_repo):
    for name in ("u2net", "codeformer"):
        graph = _graph(int8_repo, name)
        ops = [node.op_type for node in graph.node]
        assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10, name
        fp32_ops = [node.op_type for node in _graph(int8_repo, name, "fp32").node]
        assert "QuantizeLinear" not in fp32_ops
        record = json.loads((int8_repo / name / "1" / "export.int8.json").read_text())
        assert record["precision"] == "int8" and record["trained"] is False
        assert record["quantization"]["calibration_inputs"] >= len(CALIBRATION)
        assert json.loads((int8_repo / name / "1" / "export.json").read_text())["precision"] == "fp32"


def test_conv_weights_are_int8_per_output_channel(int8_repo):
    graph = _graph(int8_repo, "u2net")
    inits = {i.name: i for i in graph.initializer}
    producers = _producers(graph)
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.name.startswith("/stage1"))
    weight_dq = producers[conv.input[1]]
    assert weight_dq.op_type == "DequantizeLinear"
    assert numpy_helper.to_array(inits[weight_dq.input[0]]).dtype == np.int8
    scales = numpy_helper.to_array(inits[weight_dq.input[1]])
    assert scales.ndim == 1 and scales.size == numpy_helper.to_array(inits[weight_dq.input[0]]).shape[0] > 1
    assert producers[conv.input[0]].op_type == "DequantizeLinear"  # activations quantised too


def test_codebook_lookup_stays_fp32(int8_repo):
    graph = _graph(int8_repo, "codeformer")
    producers = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    lookup = next(n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits)
    assert "quantize.embedding.weight" in lookup.input[0]
    assert numpy_helper.to_array(inits[lookup.input[0]]).dtype == np.float32  # the codebook itself
    argmax = next(n for n in graph.node if n.op_type == "ArgMax")
    # the logits come from the fp32 head: its Linear's weight is a float initializer, and nothing
    # between it and the argmax is dequantised (the head reads the transformer's dequantised output)
    matmul = next(n for n in graph.node if n.name == "/idx_pred_layer/idx_pred_layer.1/MatMul")
    assert numpy_helper.to_array(inits[matmul.input[1]]).dtype == np.float32
    node = argmax
    while node is not matmul:
        assert all(
            producers[i].op_type not in ("DequantizeLinear", "QuantizeLinear")
            for i in node.input
            if i in producers
        )
        node = producers[node.input[0]]


def test_fp32_nodes_names_the_lookup_and_the_u2net_head(int8_repo):
    kept = fp32_nodes(onnx.load(str(int8_repo / "codeformer" / "1" / "model.onnx")))
    assert "/ArgMax" in kept and any(name.startswith("/idx_pred_layer/") for name in kept)
    head = fp32_nodes(onnx.load(str(int8_repo / "u2net" / "1" / "model.onnx")))
    assert "/outconv/Conv" in head and "/side1/Conv" in head and "/stage1/rebnconvin/conv_s1/Conv" not in head


def test_int8_models_run_with_the_fp32_contract(int8_repo):
    for name in ("u2net", "codeformer"):
        spec = resolve(name, None, "tiny")
        session = ort.InferenceSession(
            str(int8_repo / name / "1" / "model.int8.onnx"), providers=["CPUExecutionProvider"]
        )
        output = session.run(None, example_inputs(spec, 2))[0]
        assert output.shape == (2, *spec.output.shape) and output.dtype == np.float32
        assert np.isfinite(output).all()


def test_calibration_needs_a_usable_photo(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(QuantizationError, match="no usable face photo"):
        calibration_inputs(resolve("codeformer", None, "tiny"), [tmp_path / "broken.jpg"])


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        model_filename("int4")
