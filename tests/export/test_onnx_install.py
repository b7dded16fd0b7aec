import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from facecraft.export import weights
from facecraft.export.exporter import export_model
from facecraft.export.metadata import read_export_metadata
from facecraft.export.models import example_inputs, resolve
from facecraft.export.onnx_install import install_onnx


def _as_published(source, dest, renames, batch=1):
    """A copy of our export shaped like a published file: other I/O names, a fixed batch of 1."""
    model = onnx.load(str(source))
    for old, new in renames.items():
        for node in model.graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
        for value in [*model.graph.input, *model.graph.output]:
            if value.name == old:
                value.name = new
                value.type.tensor_type.shape.dim[0].Clear()
                value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, str(dest))
    return dest


def test_a_published_style_arcface_file_is_installed_with_contract_names(tiny_repo, tmp_path):
    source = tiny_repo / "arcface_w600k_r50" / "1" / "model.onnx"
    published = _as_published(source, tmp_path / "w600k_r50.onnx", {"input": "input.1", "output": "683"})
    result = export_model(
        "arcface_w600k_r50", preset="full", weights=str(published), repo=tmp_path / "repo", progress=False
    )
    meta = read_export_metadata(tmp_path / "repo" / "arcface_w600k_r50")
    assert meta["trained"] is True and meta["weights_source"] == "path"
    assert meta["renamed_io"] == {"input.1": "input", "683": "output"}
    assert (
        meta["installed_as_published"] is False and meta["parity"]["batch_independence_max_abs_diff"] <= 1e-4
    )
    assert meta["licence"]["commercial_use"] is False
    from facecraft.export.cli import summary_line

    line = summary_line(result)
    assert line.startswith("installed arcface_w600k_r50 (arcface_w600k_r50, published ONNX, I/O renamed")
    assert "weights: path, trained; licence: insightface pretrained models: non-commercial" in line
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    feeds = example_inputs(resolve("arcface_w600k_r50", preset="tiny"), 3, seed=4)
    (installed,) = session.run(["output"], feeds)
    (ours,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(["output"], feeds)
    np.testing.assert_array_equal(installed, ours)  # weights and graph untouched


def test_swap_file_without_emap_and_wrong_shapes_are_refused(tiny_repo, tmp_path):
    spec = resolve("inswapper_128", preset="full")
    model = onnx.load(str(tiny_repo / "inswapper_128" / "1" / "model.onnx"))
    del model.graph.initializer[-1]
    onnx.save(model, str(tmp_path / "no_emap.onnx"))
    with pytest.raises(weights.ArchitectureMismatchError, match="not the emap"):
        install_onnx(tmp_path / "no_emap.onnx", tmp_path / "out.onnx", spec, label="no_emap.onnx")
    arcface = tiny_repo / "arcface_w600k_r50" / "1" / "model.onnx"
    with pytest.raises(weights.ArchitectureMismatchError, match="graph inputs"):
        install_onnx(arcface, tmp_path / "out.onnx", spec, label="arcface as swap")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    with pytest.raises(weights.CorruptCheckpointError, match="not a readable ONNX file"):
        install_onnx(tmp_path / "junk.onnx", tmp_path / "out.onnx", spec, label="junk.onnx")


def test_a_graph_that_hard_codes_batch_1_is_refused(tmp_path):
    weight = np.zeros((3 * 112 * 112, 512), np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input.1", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["683"]),
        ],
        "fixed",
        [helper.make_tensor_value_info("input.1", onnx.TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", onnx.TensorProto.FLOAT, [1, 512])],
        initializer=[
            numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
            numpy_helper.from_array(weight, "w"),
        ],
    )
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(weights.ArchitectureMismatchError, match="batch"):
        install_onnx(path, tmp_path / "out.onnx", resolve("arcface_w600k_r50"), label="fixed.onnx")
