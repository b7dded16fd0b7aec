"""``--plans`` specs of ``facecraft bench`` (pure; the side-by-side run is in test_harness)."""

from __future__ import annotations

import pytest

from facecraft.bench.harness import parse_plan_spec
from facecraft.runtime.instance_groups import configure_model
from facecraft.runtime.instance_plan import plan_instances
from facecraft.runtime.model_config import parse_config

BASE = plan_instances("cpu", cores=2)
U2NET = parse_config('name: "u2net"\nbackend: "onnxruntime"\nmax_batch_size: 16\n')


def test_auto_is_the_base_plan():
    assert parse_plan_spec("auto", BASE) is BASE


def test_instances_and_threads():
    one = parse_plan_spec("1", BASE)
    assert (one.onnx_instances, one.onnx_threads) == (1, 2)  # one instance with every core
    assert (parse_plan_spec("2x1", BASE).onnx_instances, parse_plan_spec("2x1", BASE).onnx_threads) == (2, 1)


def test_a_mix_overrides_one_model_only():
    mix = parse_plan_spec("u2net=1x2", BASE)
    assert mix.placement_for("u2net") == (1, 2) and mix.placement_for("codeformer") == (2, 1)
    edited, placement = configure_model(U2NET, mix, "u2net")
    assert placement.count == 1 and edited.parameters["intra_op_thread_count"].string_value == "2"
    assert "u2net: 1 instance(s) with 2 thread(s) each" in mix.describe()
    both = parse_plan_spec("u2net=1x2+codeformer=1", BASE)
    assert both.placement_for("codeformer") == (1, 2)


@pytest.mark.parametrize("spec", ["0", "2x0", "decode=1x1", "lots", "u2net=x2"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError, match="bad instance plan"):
        parse_plan_spec(spec, BASE)
