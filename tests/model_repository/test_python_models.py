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
