"""Each Python model's ``model.py`` serves the pipeline stage named after its folder."""

from __future__ import annotations

import importlib.util

import pytest

from facecraft.pipeline.stages import STAGE_INPUTS, STAGES
from facecraft.pipeline.triton_adapter import StageModel
from tests.model_repository.test_configs import PYTHON_MODELS, REPOSITORY, load_config


def load_model_class(name: str) -> type:
    spec = importlib.util.spec_from_file_location(f"model_{name}", REPOSITORY / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_model_py_runs_the_stage_named_after_its_folder(name):
    model_class = load_model_class(name)
    assert issubclass(model_class, StageModel)
    assert name == model_class.STEP
    assert name in STAGES


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_stage_reads_exactly_the_inputs_its_config_declares(name):
    declared = {tensor.name for tensor in load_config(name).input}
    assert set(STAGE_INPUTS[name]) == declared


def test_stage_model_initialises_without_triton():
    """Outside the Triton stub the logger is absent but the stage is still resolved."""
    model = load_model_class("segment_pre")()
    model.initialize({})
    assert model.stage is STAGES["segment_pre"]
    assert model.input_names == STAGE_INPUTS["segment_pre"]
    assert model.logger is None


@pytest.mark.parametrize(
    ("record", "trusted"), [(None, False), ('{"trained": false}', False), ('{"trained": true}', True)]
)
def test_compose_trusts_the_mask_only_when_u2net_is_trained(tmp_path, record, trusted):
    """ID-photo presets take the crown from the mask only with trained U²-Net weights."""
    (tmp_path / "compose").mkdir()
    (tmp_path / "u2net" / "1").mkdir(parents=True)
    if record is not None:
        (tmp_path / "u2net" / "1" / "export.json").write_text(record)
    model = load_model_class("compose")()
    model.initialize({"model_repository": str(tmp_path / "compose")})
    assert model.mask_trusted is trusted
    assert model.stage.keywords == {"mask_trusted": trusted}
