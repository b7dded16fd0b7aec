"""Instance-group rewriting for CPU / GPU targets (pure functions on Triton's ModelConfig message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecraft.runtime.instance_groups import (
    ARENA_SHRINKAGE,
    TRT_ENGINE_CACHE,
    ConfigEditError,
    bls_steps,
    configure_instance_groups,
    configure_model,
    configure_repository,
    current_count,
    is_ensemble,
    is_onnx_model,
    one_image_per_execution,
    set_string_parameter,
)
from facecraft.runtime.instance_plan import plan_instances
from facecraft.runtime.model_config import (
    ModelConfig,
    ModelInstanceGroup,
    format_config,
    load_config,
    parse_config,
)

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
KIND_CPU = ModelInstanceGroup.KIND_CPU
KIND_GPU = ModelInstanceGroup.KIND_GPU

ONNX_CONFIG = """\
name: "u2net"
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "input", data_type: TYPE_FP32, dims: [ 3, 320, 320 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 1, 320, 320 ] } ]
# a comment with brackets and a field name: instance_group [ {
instance_group [
  {
    kind: KIND_CPU
    count: 2
  }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
parameters { key: "note" value: { string_value: "instance_group [ ] # not a comment" } }
parameters { key: "memory.enable_memory_arena_shrinkage", value: { string_value: "cpu:0" } }
"""

PYTHON_CONFIG = """\
name: "decode"
backend: "python"
max_batch_size: 16
instance_group [ { kind: KIND_CPU, count: 3 } ]
"""

ENSEMBLE_CONFIG = """\
name: "portrait"
platform: "ensemble"
max_batch_size: 1
ensemble_scheduling { step [ { model_name: "decode" model_version: -1 }, { model_name: "u2net" model_version: -1 },
  { model_name: "codeformer" model_version: -1 } ] }
"""


def groups(config: ModelConfig) -> list[tuple[int, int]]:
    return [(group.kind, group.count) for group in config.instance_group]


def without_instance_groups(config: ModelConfig) -> ModelConfig:
    stripped = ModelConfig()
    stripped.CopyFrom(config)
    del stripped.instance_group[:]
    return stripped


def test_replaces_the_groups_and_keeps_everything_else():
    config = parse_config(ONNX_CONFIG)
    result = configure_instance_groups(config, "KIND_GPU", 4)
    assert groups(result) == [(KIND_GPU, 4)] and current_count(result) == 4
    assert without_instance_groups(result) == without_instance_groups(config)
    assert result.parameters["note"].string_value == "instance_group [ ] # not a comment"
    assert groups(config) == [(KIND_CPU, 2)], "the input message is not modified"


def test_adds_a_group_when_absent():
    config = parse_config('name: "m"\nbackend: "python"\nmax_batch_size: 4\n')
    assert current_count(config) is None
    result = configure_instance_groups(config, "KIND_CPU", 2)
    assert groups(result) == [(KIND_CPU, 2)]
    assert without_instance_groups(result) == config


def test_merges_several_groups_into_one():
    config = parse_config(PYTHON_CONFIG + "instance_group [ { kind: KIND_GPU, count: 1 } ]\n")
    assert groups(config) == [(KIND_CPU, 3), (KIND_GPU, 1)]
    assert groups(configure_instance_groups(config, "KIND_CPU", 5)) == [(KIND_CPU, 5)]


def test_ensemble_is_left_alone():
    ensemble = parse_config(ENSEMBLE_CONFIG)
    assert configure_instance_groups(ensemble, "KIND_GPU", 2) == ensemble
    edited, placement = configure_model(ensemble, plan_instances("cpu", cores=4), "portrait")
    assert edited == ensemble and placement.describe() == "ensemble (unchanged)"


@pytest.mark.parametrize(
    ("kind", "count"), [("KIND_TPU", 1), ("KIND_CPU", 0), ("KIND_GPU", -1), ("KIND_CPU", True)]
)
def test_rejects_bad_arguments(kind, count):
    with pytest.raises(ConfigEditError):
        configure_instance_groups(parse_config(PYTHON_CONFIG), kind, count)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: 'x'\ninstance_group [ { kind: KIND_CPU\n", 'Expected "}"'),
        ('name: "x\nbackend: "python"\n', "String missing ending quote"),
        ('name: "x"\nbogus_field: 3\n', 'no field named "bogus_field"'),
        ('name: "x"\ninstance_group [ { kind: KIND_TPU } ]\n', "KIND_TPU"),
    ],
)
def test_a_config_that_does_not_parse_is_a_config_edit_error(text, reason):
    with pytest.raises(ConfigEditError, match=r"^models/x/config\.pbtxt: .*\d+:\d+ : ") as error:
        parse_config(text, "models/x/config.pbtxt")
    assert reason in str(error.value)


def test_field_helpers():
    assert is_onnx_model(parse_config(ONNX_CONFIG)) and not is_onnx_model(parse_config(PYTHON_CONFIG))
    assert is_onnx_model(parse_config('name: "x"\nplatform: "onnxruntime_onnx"\n'))
    assert is_ensemble(parse_config(ENSEMBLE_CONFIG)) and not is_ensemble(parse_config(ONNX_CONFIG))


def test_set_string_parameter_replaces_or_adds():
    config = parse_config(ONNX_CONFIG)
    added = set_string_parameter(config, "intra_op_thread_count", "2")
    assert added.parameters["intra_op_thread_count"].string_value == "2"
    assert dict(added.parameters) == {
        **config.parameters,
        "intra_op_thread_count": added.parameters["intra_op_thread_count"],
    }
    replaced = set_string_parameter(added, "intra_op_thread_count", "1")
    assert len(replaced.parameters) == len(added.parameters)
    assert replaced.parameters["intra_op_thread_count"].string_value == "1"
    quoted = set_string_parameter(config, "odd key", 'a "quoted" \\ value # not a comment')
    assert parse_config(format_config(quoted)) == quoted, "quotes, backslashes and # survive the text format"
    with pytest.raises(ConfigEditError):
        set_string_parameter(config, "", "1")


def test_one_image_per_execution_caps_the_batch_and_drops_preferred_sizes():
    committed = parse_config(
        ONNX_CONFIG.replace(
            "dynamic_batching { max_queue_delay_microseconds: 2000 }",
            "dynamic_batching {\n  preferred_batch_size: [ 4, 8 ]\n  max_queue_delay_microseconds: 2000\n}",
        )
    )
    result = one_image_per_execution(committed)
    assert result.max_batch_size == 1
    assert list(result.dynamic_batching.preferred_batch_size) == []
    assert result.HasField("dynamic_batching"), "the scheduler queue stays"
    assert result.dynamic_batching.max_queue_delay_microseconds == 2000
    assert ARENA_SHRINKAGE not in result.parameters and "note" in result.parameters
    assert one_image_per_execution(result) == result, "idempotent"
    python = one_image_per_execution(parse_config(PYTHON_CONFIG))
    assert python.max_batch_size == 1 and not python.HasField("dynamic_batching")


def _write_repo(root):
    for name, text in (("u2net", ONNX_CONFIG), ("decode", PYTHON_CONFIG), ("portrait", ENSEMBLE_CONFIG)):
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(text)
    return root


def test_configure_repository_cpu_plan_sets_threads_and_single_image_batches(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    plan = plan_instances("cpu", cores=2)
    placements = {p.model: p for p in configure_repository(repo, plan)}
    u2net = load_config(repo / "u2net" / "config.pbtxt")
    assert groups(u2net) == [(KIND_CPU, 2)]
    assert u2net.parameters["intra_op_thread_count"].string_value == "1"
    assert u2net.max_batch_size == 1
    assert ARENA_SHRINKAGE not in u2net.parameters
    assert placements["u2net"].describe() == "2 x KIND_CPU, 1 thread(s) each"
    decode = load_config(repo / "decode" / "config.pbtxt")
    assert groups(decode) == [(KIND_CPU, 3)] and "intra_op_thread_count" not in decode.parameters
    assert (repo / "decode" / "config.pbtxt").read_text() == PYTHON_CONFIG, (
        "unchanged configs are not rewritten"
    )
    assert placements["portrait"].describe() == "ensemble (unchanged)"


def test_configure_repository_gpu_into_copy(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    placements = configure_repository(
        repo, plan_instances("gpu", cores=2, instances=2), output=tmp_path / "out"
    )
    by_model = {p.model: (p.kind, p.count) for p in placements}
    assert by_model == {"u2net": ("KIND_GPU", 2), "decode": ("KIND_CPU", 3), "portrait": (None, None)}
    out = tmp_path / "out"
    gpu_u2net = load_config(out / "u2net" / "config.pbtxt")
    assert groups(gpu_u2net) == [(KIND_GPU, 2)]
    assert "intra_op_thread_count" not in gpu_u2net.parameters and gpu_u2net.max_batch_size == 16, (
        "GPU keeps batching"
    )
    assert ARENA_SHRINKAGE in gpu_u2net.parameters
    assert (out / "portrait" / "config.pbtxt").read_text() == ENSEMBLE_CONFIG
    # the source repository is untouched
    assert (repo / "u2net" / "config.pbtxt").read_text() == ONNX_CONFIG


def test_configure_repository_cpu_in_place_with_python_instances(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    configure_repository(repo, plan_instances("cpu", cores=2, instances=1, python_instances=4))
    assert groups(load_config(repo / "decode" / "config.pbtxt")) == [(KIND_CPU, 4)]
    assert groups(load_config(repo / "u2net" / "config.pbtxt")) == [(KIND_CPU, 1)]


def test_runtime_copy_links_payload_and_copies_configs(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    (repo / "u2net" / "1").mkdir()
    (repo / "u2net" / "1" / "model.onnx").write_bytes(b"onnx")
    out = tmp_path / "out"
    configure_repository(repo, plan_instances("cpu", cores=2, instances=3), output=out)
    assert (out / "u2net" / "1").is_symlink()
    assert (out / "u2net" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert not (out / "u2net" / "config.pbtxt").is_symlink()
    assert current_count(load_config(out / "u2net" / "config.pbtxt")) == 3
    assert current_count(load_config(repo / "u2net" / "config.pbtxt")) == 2


@pytest.mark.parametrize("output", [False, True], ids=["in-place", "copy"])
def test_a_broken_config_names_the_file_and_nothing_is_written(tmp_path, output):
    repo = _write_repo(tmp_path / "repo")
    broken = repo / "zz_broken" / "config.pbtxt"  # sorted last: every other config is edited first
    broken.parent.mkdir()
    broken.write_text('name: "zz_broken"\ninstance_group [ { kind: KIND_CPU\n')
    before = {path: path.read_text() for path in repo.glob("*/config.pbtxt")}
    out = tmp_path / "out" if output else None
    with pytest.raises(ConfigEditError) as error:
        configure_repository(repo, plan_instances("cpu", cores=2), output=out)
    assert str(broken) in str(error.value) and '2:26 : Expected "}"' in str(error.value)
    assert {path: path.read_text() for path in repo.glob("*/config.pbtxt")} == before
    assert out is None or not out.exists()


@pytest.mark.parametrize(
    "plan",
    [
        plan_instances("cpu", cores=2),
        plan_instances("cpu", cores=16, python_instances=2),
        plan_instances("gpu", cores=2),
        plan_instances("gpu", cores=2, instances=2, python_instances=3),
    ],
    ids=["cpu", "cpu-python-instances", "gpu", "gpu-instances"],
)
def test_every_generated_config_of_the_real_repository_round_trips(tmp_path, plan):
    """Each config the plan writes is the parser's canonical form of the planned message."""
    sources = sorted(REPOSITORY.glob("*/config.pbtxt"))
    assert sources, "model_repository/ has no configs"
    out = tmp_path / "runtime"
    configure_repository(REPOSITORY, plan, output=out)
    drivers = bls_steps({source.parent.name: load_config(source) for source in sources})
    generated = []
    for source in sources:
        model = source.parent.name
        written = (out / model / "config.pbtxt").read_text()
        expected, _ = configure_model(load_config(source), plan, model, drives_onnx=model in drivers)
        message = parse_config(written, out / model / "config.pbtxt")
        assert message == expected, f"{model}: the written config is not the planned one"
        if written != source.read_text():
            generated.append(model)
            assert format_config(message) == written, f"{model}: not in canonical text format"
            assert "#" not in written, f"{model}: comments are not carried into the runtime copy"
        else:
            assert message == load_config(source), f"{model}: changed by the plan but not rewritten"
    ensembles = {source.parent.name for source in sources if is_ensemble(load_config(source))}
    onnx = {source.parent.name for source in sources if is_onnx_model(load_config(source))}
    python = {source.parent.name for source in sources} - ensembles - onnx
    rewritten = onnx if plan.python_instances in (None, 1) else onnx | python
    if plan.one_image_per_run:  # the Python steps that call ONNX models by BLS: one request per run
        rewritten |= drivers
    assert onnx and set(generated) == rewritten


def test_precision_selects_the_export_file(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    (repo / "u2net" / "1").mkdir()
    (repo / "u2net" / "1" / "model.int8.onnx").write_bytes(b"onnx")
    placements = {
        p.model: p for p in configure_repository(repo, plan_instances("cpu", cores=2, precision="int8"))
    }
    assert load_config(repo / "u2net" / "config.pbtxt").default_model_filename == "model.int8.onnx"
    assert placements["u2net"].describe() == "2 x KIND_CPU, 1 thread(s) each, int8 (model.int8.onnx)"
    assert (
        load_config(repo / "decode" / "config.pbtxt").default_model_filename == ""
    )  # Python models keep theirs
    configure_repository(repo, plan_instances("cpu", cores=2))  # back to fp32
    assert load_config(repo / "u2net" / "config.pbtxt").default_model_filename == ""


def test_a_precision_without_its_export_is_refused_before_anything_is_written(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    with pytest.raises(ConfigEditError, match=r"facecraft export u2net --precision int8"):
        configure_repository(repo, plan_instances("cpu", cores=2, precision="int8"), output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigEditError, match="not ONNX models"):
        configure_repository(repo, plan_instances("cpu", cores=2, precision="decode=int8"))
    assert (repo / "u2net" / "config.pbtxt").read_text() == ONNX_CONFIG


def test_tensorrt_accelerator_fp16_with_engine_cache():
    config = parse_config(ONNX_CONFIG)
    edited, _ = configure_model(config, plan_instances("gpu", cores=8, gpu_accelerator="tensorrt"), "u2net")
    (accelerator,) = edited.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert accelerator.parameters["trt_engine_cache_path"] == TRT_ENGINE_CACHE
    cuda, _ = configure_model(config, plan_instances("gpu", cores=8), "u2net")
    assert not cuda.optimization.execution_accelerators.gpu_execution_accelerator
    cpu, _ = configure_model(config, plan_instances("cpu", cores=2), "u2net")
    assert not cpu.HasField("optimization")


def test_the_python_steps_that_call_onnx_models_by_bls_are_found_from_the_registry():
    configs = {path.parent.name: load_config(path) for path in REPOSITORY.glob("*/config.pbtxt")}
    # face_enhancer's steps (faces, face_enhance → codeformer), background_remover's, frame_enhancer's
    # and face_swapper's; not the portrait steps (codeformer and u2net are ensemble steps there) nor
    # face_analyser's own step (no ONNX model)
    # frame_enhancer's step too, before its Real-ESRGAN models are exported (export catalog names)
    expected = {"faces", "face_enhance", "background_remove", "enhance_frame", "face_swap"}
    assert bls_steps(configs) == expected
    from facecraft.export.catalog import COMMITTED_CONFIGS

    exported = {**configs, **{name: load_config(path) for name, path in COMMITTED_CONFIGS.items()}}
    assert bls_steps(exported) == expected


def test_a_cpu_plan_gives_each_bls_step_one_instance_per_onnx_instance_and_one_request_per_run(tmp_path):
    out = tmp_path / "runtime"
    placements = {
        p.model: p for p in configure_repository(REPOSITORY, plan_instances("cpu", cores=2), output=out)
    }
    face_enhance = load_config(out / "face_enhance" / "config.pbtxt")
    assert groups(face_enhance) == [(KIND_CPU, 2)] and face_enhance.max_batch_size == 1
    assert placements["face_enhance"].count == 2 == placements["codeformer"].count
    # a portrait step keeps its committed instance and batching
    detect = load_config(out / "detect" / "config.pbtxt")
    assert (
        groups(detect) == [(KIND_CPU, 1)]
        and detect.max_batch_size == load_config(REPOSITORY / "detect" / "config.pbtxt").max_batch_size
    )
    # an explicit python_instances wins; GPU plans keep the committed count and batching
    single = tmp_path / "single"
    configure_repository(REPOSITORY, plan_instances("cpu", cores=2, python_instances=1), output=single)
    assert groups(load_config(single / "face_enhance" / "config.pbtxt")) == [(KIND_CPU, 1)]
    gpu = tmp_path / "gpu"
    configure_repository(REPOSITORY, plan_instances("gpu", cores=2), output=gpu)
    committed = load_config(REPOSITORY / "face_enhance" / "config.pbtxt")
    assert load_config(gpu / "face_enhance" / "config.pbtxt").max_batch_size == committed.max_batch_size
