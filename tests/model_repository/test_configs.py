"""Every config.pbtxt parses as a Triton ModelConfig and the ensembles are wired consistently."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from facecraft.runtime import model_config

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
ENSEMBLES = ("portrait", "portrait_basic")
ONNX_MODELS = ("codeformer", "u2net")
PYTHON_MODELS = (
    "decode",
    "detect",
    "enhance_pre",
    "enhance_post",
    "segment_pre",
    "compose",
    # steps of the processor ensembles (facecraft.pipeline.processor_stages)
    "faces",
    "face_enhance",
    "face_analyse",
    "background_remove",
    "enhance_frame",
    "face_swap",
)
PROCESSOR_ENSEMBLES = (
    "face_enhancer",
    "face_analyser",
    "background_remover",
    "frame_enhancer",
    "face_swapper",
)
# Second ensembles of a processor (Processor.ensembles[1:]): face_swapper's source identity alone.
IDENTITY_ENSEMBLES = ("face_swapper_source",)


def load_config(name: str) -> model_config_pb2.ModelConfig:
    return model_config.load_config(REPOSITORY / name / "config.pbtxt")


def all_configs() -> dict[str, model_config_pb2.ModelConfig]:
    return {
        path.parent.name: load_config(path.parent.name) for path in sorted(REPOSITORY.glob("*/config.pbtxt"))
    }


def tensor_specs(tensors) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in tensors}


def test_repository_holds_every_model():
    assert set(all_configs()) == {
        *ENSEMBLES, *PROCESSOR_ENSEMBLES, *IDENTITY_ENSEMBLES, *ONNX_MODELS, *PYTHON_MODELS
    }  # fmt: skip


@pytest.mark.parametrize(
    "name", [*ENSEMBLES, *PROCESSOR_ENSEMBLES, *IDENTITY_ENSEMBLES, *ONNX_MODELS, *PYTHON_MODELS]
)
def test_config_name_matches_folder_and_has_a_version_folder(name):
    config = load_config(name)
    assert config.name == name
    assert (REPOSITORY / name / "1").is_dir()


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_python_models_batch_dynamically_and_have_model_py(name):
    config = load_config(name)
    assert config.backend == "python"
    assert config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    assert (REPOSITORY / name / "1" / "model.py").is_file()
    for tensor in config.input:
        if -1 in tensor.dims:
            assert tensor.allow_ragged_batch, f"{name}.{tensor.name} is variable-size but not ragged"


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_models_batch_dynamically_with_fixed_dims(name):
    config = load_config(name)
    assert config.backend == "onnxruntime"
    assert config.max_batch_size >= 8
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size)
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    for tensor in [*config.input, *config.output]:
        assert all(d > 0 for d in tensor.dims), f"{name}.{tensor.name} has a dynamic dim"


@pytest.mark.parametrize("name", [*ONNX_MODELS, *PYTHON_MODELS])
def test_instance_groups_are_the_simple_cpu_default(name):
    groups = load_config(name).instance_group
    assert len(groups) == 1
    assert groups[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert groups[0].count == 1


def check_ensemble_wiring(ensemble: model_config_pb2.ModelConfig, configs: dict) -> None:
    """Assert that every step's maps match its model and the tensor graph is closed."""
    name = ensemble.name
    # tensor name → (dtype, dims) as produced so far; the ensemble inputs are available first.
    available = tensor_specs(ensemble.input)
    consumed: set[str] = set()
    steps = list(ensemble.ensemble_scheduling.step)
    pending = steps[:]
    # Resolve steps in dependency order; a step that can never run means a tensor nobody produces.
    while pending:
        ready = [s for s in pending if all(v in available for v in s.input_map.values())]
        assert ready, f"{name}: steps {[s.model_name for s in pending]} consume tensors nobody produces"
        for step in ready:
            model = configs[step.model_name]
            model_inputs = tensor_specs(model.input)
            model_outputs = tensor_specs(model.output)
            for model_input, tensor in step.input_map.items():
                assert model_input in model_inputs, f"{step.model_name} has no input {model_input}"
                assert available[tensor] == model_inputs[model_input], (
                    f"{name}: {tensor} {available[tensor]} does not match {step.model_name}.{model_input} "
                    f"{model_inputs[model_input]}"
                )
                consumed.add(tensor)
            required = {t.name for t in model.input if not t.optional}
            assert required <= set(step.input_map), (
                f"{step.model_name} misses {required - set(step.input_map)}"
            )
            for model_output, tensor in step.output_map.items():
                assert model_output in model_outputs, f"{step.model_name} has no output {model_output}"
                assert tensor not in available, f"{name}: {tensor} is produced twice"
                available[tensor] = model_outputs[model_output]
            pending.remove(step)
    for tensor in ensemble.input:
        assert tensor.name in consumed, f"{name}: input {tensor.name} is never used"
    for tensor in ensemble.output:
        assert tensor.name in available, f"{name}: output {tensor.name} is never produced"
        assert available[tensor.name] == (tensor.data_type, tuple(tensor.dims))
    produced_inside = set(available) - {t.name for t in ensemble.input}
    unused = produced_inside - consumed - {t.name for t in ensemble.output}
    assert not unused, f"{name}: tensors produced but never used: {unused}"


@pytest.mark.parametrize("name", [*ENSEMBLES, *PROCESSOR_ENSEMBLES, *IDENTITY_ENSEMBLES])
def test_ensemble_wiring_matches_the_composing_models(name):
    configs = all_configs()
    ensemble = configs[name]
    assert ensemble.platform == "ensemble"
    assert ensemble.max_batch_size == 1
    check_ensemble_wiring(ensemble, configs)


def _broken_copy(mutate) -> tuple[model_config_pb2.ModelConfig, dict]:
    configs = all_configs()
    ensemble = model_config_pb2.ModelConfig()
    ensemble.CopyFrom(configs["portrait"])
    mutate(ensemble, configs)
    return ensemble, configs


def _step(ensemble, model_name):
    return next(s for s in ensemble.ensemble_scheduling.step if s.model_name == model_name)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e, c: _step(e, "codeformer").input_map.__setitem__("w", "options"), "does not match"),
        (lambda e, c: _step(e, "compose").input_map.__setitem__("SEG_MAP", "nobody"), "nobody produces"),
        (lambda e, c: _step(e, "u2net").input_map.__setitem__("image", "seg_input"), "has no input image"),
        (lambda e, c: c["detect"].output[0].dims.__setitem__(0, 5), "does not match"),
        (
            lambda e, c: e.input.add(name="EXTRA", data_type=model_config_pb2.TYPE_FP32, dims=[1]),
            "never used",
        ),
    ],
)
def test_wiring_check_catches_broken_ensembles(mutate, message):
    ensemble, configs = _broken_copy(mutate)
    with pytest.raises(AssertionError, match=message):
        check_ensemble_wiring(ensemble, configs)


@pytest.mark.parametrize("name", ENSEMBLES)
def test_ensemble_options_are_optional_and_match_decode(name):
    ensemble = load_config(name)
    decode = tensor_specs(load_config("decode").input)
    for tensor in ensemble.input:
        assert tensor.optional == (tensor.name != "IMAGE")
        assert decode[tensor.name] == (tensor.data_type, tuple(tensor.dims))


def test_portrait_basic_never_runs_codeformer():
    models = {s.model_name for s in load_config("portrait_basic").ensemble_scheduling.step}
    assert "codeformer" not in models
    assert not models & {"enhance_pre", "enhance_post"}
    assert "FIDELITY" not in {t.name for t in load_config("portrait_basic").input}


def test_portrait_runs_codeformer_with_fidelity_as_a_tensor():
    steps = {s.model_name: s for s in load_config("portrait").ensemble_scheduling.step}
    assert steps["codeformer"].input_map["w"] == steps["decode"].output_map["FIDELITY_W"]
    assert steps["compose"].input_map["RGB"] == steps["enhance_post"].output_map["ENHANCED"]


@pytest.mark.parametrize("name", ENSEMBLES)
def test_segmentation_waits_for_detection_and_runs_beside_enhancement(name):
    steps = {s.model_name: s for s in load_config(name).ensemble_scheduling.step}
    decode_outputs = set(steps["decode"].output_map.values())
    # segment_pre is gated on detect's face count (a no-face photo fails before any branch runs) ...
    assert set(steps["segment_pre"].input_map.values()) == {"rgb", "FACE_COUNT"}
    assert "FACE_COUNT" in set(steps["detect"].output_map.values())
    assert "rgb" in decode_outputs
    # ... and the segmentation branch and the enhancement branch never feed each other.
    seg_side = set(steps["segment_pre"].output_map.values()) | set(steps["u2net"].output_map.values())
    if "enhance_pre" in steps:
        enhance_side = {
            tensor
            for model in ("enhance_pre", "codeformer", "enhance_post")
            for tensor in steps[model].output_map.values()
        }
        for model in ("enhance_pre", "codeformer", "enhance_post"):
            assert not set(steps[model].input_map.values()) & seg_side
        for model in ("segment_pre", "u2net"):
            assert not set(steps[model].input_map.values()) & enhance_side


@pytest.mark.parametrize("name", PROCESSOR_ENSEMBLES)
def test_processor_ensemble_contract_is_the_registry(name):
    """IMAGE (face_swapper: SOURCE and TARGET) plus one optional input per registry option (its tensor and datatype), the registry's
    outputs, and every model the registry names is in the repository (or exported by name with a
    committed config: export/configs/)."""
    from facecraft import processors

    processor = processors.get(name)
    ensemble = load_config(name)
    datatype = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32", "BOOL": "TYPE_BOOL",
                "UINT8": "TYPE_UINT8"}  # fmt: skip
    inputs = {t.name: (t.optional, model_config_pb2.DataType.Name(t.data_type)) for t in ensemble.input}
    expected = {o.tensor: (True, datatype[o.datatype]) for o in processor.options if o.tensor}
    images = {
        tensor: (False, "TYPE_STRING") for tensor in processor.image_inputs
    }  # IMAGE, or SOURCE + TARGET
    identity = processor.identity
    if identity is not None:  # SOURCE or its precomputed embedding (face_swapper_source's output)
        images[identity.image] = (True, "TYPE_STRING")
        expected[identity.tensor] = (True, datatype[identity.datatype])
        source = load_config(identity.ensemble)
        assert {t.name: t.optional for t in source.input} == {
            identity.image: False, **{processor.option(o).tensor: True for o in identity.options}
        }  # fmt: skip
        assert tensor_specs(source.output) == {
            identity.tensor: (getattr(model_config_pb2, datatype[identity.datatype]), (identity.size,))
        }
    assert inputs == {**images, **expected}
    assert tuple(t.name for t in ensemble.output) == processor.outputs
    assert processor.ensembles == (name, *([identity.ensemble] if identity else []))
    steps = {s.model_name for s in ensemble.ensemble_scheduling.step}
    assert steps <= set(processor.models)
    from facecraft.export.catalog import COMMITTED_CONFIGS

    # in the repository, or exported by name with its committed config (Real-ESRGAN)
    assert all(
        (REPOSITORY / model / "config.pbtxt").is_file() or model in COMMITTED_CONFIGS
        for model in processor.models
    )


def test_every_model_has_a_version_folder_that_git_keeps():
    """Triton refuses a model with no version folder ("at least one version must be available") and
    then the whole repository; git drops empty folders, so each ``1/`` must hold a tracked file
    (``model.py`` or ``.gitkeep``), or a fresh clone does not start."""
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files", "model_repository"],
        cwd=REPOSITORY.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if tracked.returncode != 0 or not tracked.stdout:
        pytest.skip("not a git checkout")
    versions = {Path(line).parts[1] for line in tracked.stdout.splitlines() if len(Path(line).parts) > 3}
    models = {path.parent.name for path in REPOSITORY.glob("*/config.pbtxt")}
    assert models - versions == set()
