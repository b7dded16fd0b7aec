"""Instance-group rewriting for CPU / GPU targets (pure text transformation)."""

from __future__ import annotations

import pytest

from facecraft.runtime.instance_groups import (
    ConfigEditError,
    configure_instance_groups,
    configure_repository,
    current_count,
    is_onnx_model,
    one_image_per_execution,
    remove_parameter,
    set_string_parameter,
    set_top_level_scalar,
    top_level_value,
)
from facecraft.runtime.instance_plan import plan_instances

ONNX_CONFIG = """\
name: "u2net"
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "input", data_type: TYPE_FP32, dims: [ 3, 320, 320 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 1, 320, 320 ] } ]
# instance_group in a comment stays: [ {
instance_group [
  {
    kind: KIND_CPU
    count: 2
  }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
parameters { key: "note" value: { string_value: "instance_group [ ]" } }
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
ensemble_scheduling { step [ { model_name: "decode" model_version: -1 } ] }
"""


def test_replaces_block_and_keeps_everything_else():
    result = configure_instance_groups(ONNX_CONFIG, "KIND_GPU", 4)
    assert "kind: KIND_GPU" in result and "count: 4" in result
    assert "KIND_CPU" not in result
    assert result.count("instance_group [\n") == 1
    assert "# instance_group in a comment stays: [ {" in result
    assert 'string_value: "instance_group [ ]"' in result
    assert result.index("kind: KIND_GPU") < result.index("dynamic_batching")
    assert current_count(result) == 4


def test_appends_block_when_absent():
    text = 'name: "m"\nbackend: "python"\nmax_batch_size: 4\n'
    result = configure_instance_groups(text, "KIND_CPU", 2)
    assert result.startswith(text)
    assert current_count(result) == 2 and "kind: KIND_CPU" in result


def test_merges_several_blocks_into_one():
    text = PYTHON_CONFIG + "instance_group [ { kind: KIND_GPU, count: 1 } ]\n"
    result = configure_instance_groups(text, "KIND_CPU", 5)
    assert result.count("instance_group") == 1
    assert "KIND_GPU" not in result and current_count(result) == 5


def test_ensemble_is_left_alone():
    assert configure_instance_groups(ENSEMBLE_CONFIG, "KIND_GPU", 2) == ENSEMBLE_CONFIG


@pytest.mark.parametrize(("kind", "count"), [("KIND_TPU", 1), ("KIND_CPU", 0), ("KIND_GPU", -1)])
def test_rejects_bad_arguments(kind, count):
    with pytest.raises(ConfigEditError):
        configure_instance_groups(PYTHON_CONFIG, kind, count)


def test_rejects_unbalanced_config():
    with pytest.raises(ConfigEditError, match="unbalanced"):
        configure_instance_groups("name: 'x'\ninstance_group [ { kind: KIND_CPU\n", "KIND_CPU", 1)


def test_field_helpers():
    assert top_level_value(ONNX_CONFIG, "backend") == "onnxruntime"
    assert top_level_value(ENSEMBLE_CONFIG, "platform") == "ensemble"
    assert is_onnx_model(ONNX_CONFIG) and not is_onnx_model(PYTHON_CONFIG)
    assert is_onnx_model('name: "x"\nplatform: "onnxruntime_onnx"\n')


def _write_repo(root):
    for name, text in (("u2net", ONNX_CONFIG), ("decode", PYTHON_CONFIG), ("portrait", ENSEMBLE_CONFIG)):
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(text)
    return root


def test_set_string_parameter_replaces_or_appends():
    text = set_string_parameter(ONNX_CONFIG, "intra_op_thread_count", "2")
    assert 'parameters { key: "intra_op_thread_count", value: { string_value: "2" } }' in text
    assert 'string_value: "instance_group [ ]"' in text, "other parameters are kept"
    again = set_string_parameter(text, "intra_op_thread_count", "1")
    assert again.count("intra_op_thread_count") == 1 and 'string_value: "1" }' in again
    with pytest.raises(ConfigEditError):
        set_string_parameter(ONNX_CONFIG, "bad key", "1")


def test_remove_parameter_drops_the_entry_and_its_comment():
    text = (
        'name: "m"\n# shrink the arena\n# after each run\n'
        'parameters { key: "memory.enable_memory_arena_shrinkage", value: { string_value: "cpu:0" } }\n'
        'parameters { key: "other", value: { string_value: "1" } }\n'
    )
    result = remove_parameter(text, "memory.enable_memory_arena_shrinkage")
    assert result == 'name: "m"\nparameters { key: "other", value: { string_value: "1" } }\n'
    assert remove_parameter(result, "absent") == result


def test_set_top_level_scalar_only_touches_the_top_level():
    nested = 'name: "m"\nmax_batch_size: 16\nsequence_batching { max_batch_size: 3 }\n'
    text = set_top_level_scalar(nested, "max_batch_size", "1")
    assert "max_batch_size: 1\n" in text and "{ max_batch_size: 3 }" in text
    assert set_top_level_scalar('name: "m"\n', "max_batch_size", "2") == 'name: "m"\nmax_batch_size: 2\n'


def test_one_image_per_execution_caps_the_batch_and_drops_preferred_sizes():
    committed = ONNX_CONFIG.replace(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        "dynamic_batching {\n  preferred_batch_size: [ 4, 8 ]\n  max_queue_delay_microseconds: 2000\n}",
    )
    text = one_image_per_execution(committed)
    assert "max_batch_size: 1\n" in text and "max_batch_size: 16" not in text
    assert "preferred_batch_size" not in text
    assert "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}" in text, "the scheduler queue stays"
    assert one_image_per_execution(text) == text, "idempotent"
    python = one_image_per_execution(PYTHON_CONFIG)
    assert "max_batch_size: 1" in python and "dynamic_batching" not in python


def test_configure_repository_cpu_plan_sets_threads_and_single_image_batches(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    plan = plan_instances("cpu", cores=2)
    placements = {p.model: p for p in configure_repository(repo, plan)}
    u2net = (repo / "u2net" / "config.pbtxt").read_text()
    assert current_count(u2net) == 2 and "KIND_CPU" in u2net
    assert 'key: "intra_op_thread_count", value: { string_value: "1" }' in u2net
    assert "max_batch_size: 1\n" in u2net
    assert "memory.enable_memory_arena_shrinkage" not in u2net
    assert placements["u2net"].describe() == "2 x KIND_CPU, 1 thread(s) each"
    decode = (repo / "decode" / "config.pbtxt").read_text()
    assert current_count(decode) == 3 and "intra_op_thread_count" not in decode
    assert placements["portrait"].describe() == "ensemble (unchanged)"


def test_configure_repository_gpu_into_copy(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    placements = configure_repository(
        repo, plan_instances("gpu", cores=2, instances=2), output=tmp_path / "out"
    )
    by_model = {p.model: (p.kind, p.count) for p in placements}
    assert by_model == {"u2net": ("KIND_GPU", 2), "decode": ("KIND_CPU", 3), "portrait": (None, None)}
    out = tmp_path / "out"
    gpu_u2net = (out / "u2net" / "config.pbtxt").read_text()
    assert "KIND_GPU" in gpu_u2net
    assert "intra_op_thread_count" not in gpu_u2net and "max_batch_size: 16" in gpu_u2net, (
        "GPU keeps batching"
    )
    assert "memory.enable_memory_arena_shrinkage" in gpu_u2net
    assert (out / "portrait" / "config.pbtxt").read_text() == ENSEMBLE_CONFIG
    # the source repository is untouched
    assert (repo / "u2net" / "config.pbtxt").read_text() == ONNX_CONFIG


def test_configure_repository_cpu_in_place_with_python_instances(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    configure_repository(repo, plan_instances("cpu", cores=2, instances=1, python_instances=4))
    assert current_count((repo / "decode" / "config.pbtxt").read_text()) == 4
    u2net = (repo / "u2net" / "config.pbtxt").read_text()
    assert "KIND_CPU" in u2net and current_count(u2net) == 1


def test_runtime_copy_links_payload_and_copies_configs(tmp_path):
    repo = _write_repo(tmp_path / "repo")
    (repo / "u2net" / "1").mkdir()
    (repo / "u2net" / "1" / "model.onnx").write_bytes(b"onnx")
    out = tmp_path / "out"
    configure_repository(repo, plan_instances("cpu", cores=2, instances=3), output=out)
    assert (out / "u2net" / "1").is_symlink()
    assert (out / "u2net" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert not (out / "u2net" / "config.pbtxt").is_symlink()
    assert current_count((out / "u2net" / "config.pbtxt").read_text()) == 3
    assert current_count((repo / "u2net" / "config.pbtxt").read_text()) == 2
