"""Machine description, ONNX MAC counting on graphs with known cost, conv probe, /proc peak RSS."""

from __future__ import annotations

import os

import numpy as np
import onnx
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
