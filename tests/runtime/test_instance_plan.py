"""Instance plans: how many ONNX / Python instances and ONNX threads a host gets."""

from __future__ import annotations

import pytest

from facecraft.runtime.instance_plan import (
    InstancePlanError,
    auto_onnx_instances,
    cgroup_core_limit,
    parse_precision,
    plan_instances,
    usable_cores,
)


@pytest.mark.parametrize(
    ("cores", "instances", "threads"),
    [(1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 2, 2), (8, 2, 4), (12, 3, 4), (16, 4, 4), (64, 4, 16)],
)
def test_cpu_plan_splits_the_cores_between_onnx_instances(cores, instances, threads):
    plan = plan_instances("cpu", cores=cores)
    assert (plan.onnx_instances, plan.onnx_threads) == (instances, threads)
    assert plan.onnx_instances * plan.onnx_threads <= cores
    assert plan.one_image_per_run and plan.device == "cpu"
    assert auto_onnx_instances(cores) == instances


def test_python_instances_grow_only_from_eight_cores():
    assert plan_instances("cpu", cores=4).python_instances is None  # committed count
    assert plan_instances("cpu", cores=8).python_instances == 2
    assert plan_instances("gpu", cores=16).python_instances == 4


def test_explicit_values_override_the_automatic_choice():
    plan = plan_instances("cpu", cores=16, instances=1)
    assert (plan.onnx_instances, plan.onnx_threads) == (1, 16)
    plan = plan_instances("cpu", cores=16, onnx_threads=2)
    assert (plan.onnx_instances, plan.onnx_threads) == (4, 2)
    plan = plan_instances("cpu", cores=2, instances=3, onnx_threads=2, python_instances=5)
    assert (plan.onnx_instances, plan.onnx_threads, plan.python_instances) == (3, 2, 5)


def test_gpu_plan_keeps_batching_and_onnxruntime_threads():
    plan = plan_instances("gpu", cores=2)
    assert (plan.onnx_instances, plan.onnx_threads, plan.one_image_per_run) == (1, None, False)
    assert "committed batching" in plan.describe()


def test_describe_names_every_choice():
    text = plan_instances("cpu", cores=2).describe()
    assert text == (
        "cpu plan for 2 core(s): 2 instance(s) of each ONNX model with 1 thread(s) each, one image per "
        "execution, precision fp32; committed Python model instances, 2 (one per ONNX instance) of each "
        "Python step calling ONNX models by BLS, one request per execution"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instances": 0}, "instances"),
        ({"onnx_threads": -1}, "onnx threads"),
        ({"python_instances": True}, "python instances"),
        ({"cores": 0}, "cores"),
    ],
)
def test_rejects_non_positive_counts(kwargs, message):
    with pytest.raises(InstancePlanError, match=message):
        plan_instances("cpu", **kwargs)


def test_rejects_unknown_device():
    with pytest.raises(InstancePlanError, match="device"):
        plan_instances("tpu", cores=2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("max 100000\n", None),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("400000 100000", 4),
        ("junk", None),
    ],
)
def test_cgroup_core_limit(tmp_path, content, expected):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_core_limit(cpu_max) == expected
    assert cgroup_core_limit(tmp_path / "missing") is None


def test_usable_cores_is_capped_by_the_cgroup_quota(monkeypatch, tmp_path):
    import facecraft.runtime.instance_plan as instance_plan

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    monkeypatch.setattr(instance_plan, "CGROUP_CPU_MAX", cpu_max)
    assert usable_cores() == 1
    cpu_max.write_text("max 100000\n")
    assert usable_cores() >= 1


def test_precision_is_fp32_unless_asked():
    plan = plan_instances("cpu", cores=2)
    assert plan.precisions == () and plan.precision_for("u2net") == "fp32"
    assert "precision fp32" in plan.describe()


def test_precision_for_every_model_or_per_model():
    every = plan_instances("cpu", cores=2, precision="int8")
    assert every.precision_for("u2net") == every.precision_for("codeformer") == "int8"
    mixed = plan_instances("cpu", cores=2, precision="int8,codeformer=fp32")
    assert mixed.precision_for("u2net") == "int8" and mixed.precision_for("codeformer") == "fp32"
    one = plan_instances("cpu", cores=2, precision="u2net=int8")
    assert one.precision_for("u2net") == "int8" and one.precision_for("codeformer") == "fp32"
    assert "u2net int8" in one.describe()
    assert parse_precision("fp32") == () and parse_precision("") == ()


@pytest.mark.parametrize("text", ["int4", "u2net=bf16", "=int8"])
def test_bad_precision_is_refused(text):
    with pytest.raises(InstancePlanError):
        parse_precision(text)


def test_gpu_accelerator():
    assert plan_instances("gpu", cores=8).gpu_accelerator == "cuda"
    trt = plan_instances("gpu", cores=8, gpu_accelerator="tensorrt", precision="fp16")
    assert "tensorrt accelerator" in trt.describe() and trt.precision_for("codeformer") == "fp16"
    with pytest.raises(InstancePlanError):
        plan_instances("gpu", cores=8, gpu_accelerator="openvino")
