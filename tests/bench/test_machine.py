"""Machine description, ONNX MAC counting on graphs with known cost, conv probe, /proc peak RSS."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facecraft.bench.machine import conv_probe, count_onnx_macs, describe_machine, peak_rss_of_tree


def test_count_macs_of_conv_and_matmul(tmp_path):
    conv_w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "conv_w")
    mm_w = numpy_helper.from_array(np.zeros((16, 5), np.float32), "mm_w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),  # [N,8,16,16]
            helper.make_node("MatMul", ["c", "mm_w"], ["y"]),  # [N,8,16,5]
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[conv_w, mm_w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    conv_macs = 8 * 16 * 16 * 3 * 9
    matmul_macs = 8 * 16 * 5 * 16
    assert count_onnx_macs(path) == conv_macs + matmul_macs


def _constant(name: str, values) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64)))


def test_count_macs_after_a_pad_with_computed_pads(tmp_path):
    """torch exports ``F.pad(x, (0, 1, 0, 1))`` as a Pad whose pads are computed (Reshape, reversed
    Slice, Transpose, Reshape, Cast): onnx's own shape inference loses every shape after it, and
    the old count read the unknown dimensions as 1 (216 MACs here; CodeFormer 337 of 405 GMAC)."""
    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    nodes = [
        _constant("torch_pads", [0, 1, 0, 1, 0, 0, 0, 0]),
        _constant("pairs", [-1, 2]),
        helper.make_node("Reshape", ["torch_pads", "pairs"], ["p1"]),
        _constant("start", [-1]),
        _constant("end", [-(2**63)]),
        _constant("axis", [0]),
        _constant("step", [-1]),
        helper.make_node("Slice", ["p1", "start", "end", "axis", "step"], ["p2"]),
        helper.make_node("Transpose", ["p2"], ["p3"], perm=[1, 0]),
        _constant("flat", [-1]),
        helper.make_node("Reshape", ["p3", "flat"], ["p4"]),
        helper.make_node("Cast", ["p4"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),  # [N,3,17,17]
        helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2]),  # [N,8,8,8]
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[weight],
    )
    path = tmp_path / "padded.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert count_onnx_macs(path) == 8 * 8 * 8 * 3 * 9


def test_count_macs_refuses_a_shape_it_cannot_know(tmp_path):
    """A MatMul on a tensor reshaped to a shape fed at run time is named, not left out."""
    b = numpy_helper.from_array(np.zeros((4, 4), np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["a", "runtime_shape"], ["reshaped"]),
            helper.make_node("MatMul", ["reshaped", "b"], ["y"], name="mystery_matmul"),
        ],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [16]),
            helper.make_tensor_value_info("runtime_shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[b],
    )
    path = tmp_path / "unknown.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="mystery_matmul"):
        count_onnx_macs(path)


def test_conv_probe_reports_positive_throughput():
    probe = conv_probe(repeats=1, channels=32, size=32)
    assert probe.gflops > 0
    assert probe.gmac_per_run == 32 * 32 * 9 * 32 * 32 / 1e9
    assert probe.provider == "CPUExecutionProvider"


def test_describe_machine_and_peak_rss_of_this_process():
    machine = describe_machine()
    assert machine["logical_cores"] >= 1
    assert "onnxruntime" in machine["versions"]
    rss = peak_rss_of_tree(os.getpid())
    own = [mib for name, mib in rss.items() if name.endswith(f"[{os.getpid()}]")]
    assert own and own[0] > 0
