"""The committed config.pbtxt of the face-swap and frame-enhancer models (export/configs/)."""

import pytest
from tritonclient.grpc import model_config_pb2

from facecraft.export.catalog import (
    COMMITTED_CONFIGS,
    LICENCES,
    MODEL_NAMES,
    NON_COMMERCIAL,
    SWAP_AND_ENHANCE_MODELS,
)
from facecraft.export.exporter import write_derived_config
from facecraft.export.models import resolve
from facecraft.runtime.model_config import load_config


def _specs(tensors):
    return {t.name: (t.data_type, tuple(t.dims)) for t in tensors}


@pytest.mark.parametrize("name", SWAP_AND_ENHANCE_MODELS)
def test_committed_config_matches_the_export_contract_and_batches(name):
    config = load_config(COMMITTED_CONFIGS[name])
    assert config.name == name and config.backend == "onnxruntime"
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size)
    spec = resolve(name)
    fp32 = model_config_pb2.TYPE_FP32
    assert _specs(config.input) == {t.name: (fp32, tuple(t.shape)) for t in spec.inputs}
    assert _specs(config.output) == {spec.output.name: (fp32, tuple(spec.output.shape))}
    dynamic = name.startswith("realesrgan")
    for tensor in [*config.input, *config.output]:
        assert (list(tensor.dims) == [3, -1, -1]) if dynamic else all(d > 0 for d in tensor.dims)
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 1


def test_export_writes_the_committed_config_once(tmp_path):
    target = write_derived_config(tmp_path, "realesrgan_x2plus")
    assert target == tmp_path / "realesrgan_x2plus" / "config.pbtxt"
    assert target.read_text() == COMMITTED_CONFIGS["realesrgan_x2plus"].read_text()
    target.write_text(target.read_text() + "# edited by an operator\n")
    assert write_derived_config(tmp_path, "realesrgan_x2plus") is None  # an existing config is kept
    assert target.read_text().endswith("# edited by an operator\n")


def test_every_model_has_a_licence_and_the_insightface_ones_are_non_commercial():
    assert set(LICENCES) == set(MODEL_NAMES)
    assert {"arcface_w600k_r50", "inswapper_128"} <= NON_COMMERCIAL
    assert "non-commercial" in LICENCES["inswapper_128"] and "non-commercial" in LICENCES["arcface_w600k_r50"]
    assert LICENCES["realesrgan_x4plus"].startswith("BSD-3-Clause")
    assert "realesrgan_x4plus" not in NON_COMMERCIAL
