"""Report building: ratios, roofline, achieved GFLOP/s and the Markdown sections, from known numbers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from facecraft.bench.harness import BenchConfig
from facecraft.bench.machine import ConvProbe
from facecraft.bench.report import build_report, render_markdown
from facecraft.runtime.instance_plan import plan_instances


def scenario(name, enhance, concurrency, images_per_s, models=()):
    return {
        "scenario": name,
        "enhance": enhance,
        "concurrency": concurrency,
        "effective_concurrency": concurrency,
        "requests": 4,
        "ok": 4,
        "failed": 0,
        "wall_s": 4 / images_per_s,
        "images_per_s": images_per_s,
        "latency_ms": {"p50": 100.0, "p95": 150.0, "p99": 160.0, "mean": 110.0},
        "errors": [],
        "triton_models": list(models),
    }


def make_report(probe_samples=None, windows=None):
    codeformer_delta = {
        "model": "codeformer",
        "requests": 4,
        "inferences": 4,
        "executions": 2,
        "avg_batch_size": 2.0,
        "queue_ms_per_request": 5.0,
        "compute_ms_per_request": 50.0,
        "compute_infer_ms_per_execution": 100.0,
        "compute_infer_s_total": 2.0,
    }
    scenarios = [
        {**scenario("sequential", True, 1, 0.1), "pass": "start"},
        {**scenario("sequential", True, 1, 0.08), "pass": "end"},
        scenario("sequential", False, 1, 0.5),
        scenario("triton_grpc", True, 1, 0.1, [codeformer_delta]),
        scenario("triton_grpc", True, 4, 0.3, [codeformer_delta]),
        scenario("triton_grpc", False, 4, 1.0),
        scenario("gateway_http", True, 4, 0.27),
    ]
    for record, window in zip(scenarios, windows or [], strict=False):
        record["probe_window"] = window
    return build_report(
        config=BenchConfig(preset="full", device="cpu", concurrency=[1, 4], requests=4),
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        machine={"cpu_model": "test", "logical_cores": 2, "usable_cores": 2, "versions": {}},
        probe=ConvProbe(
            gflops=100.0, gmac_per_run=1.0, seconds_per_run=0.02, provider="CPUExecutionProvider", shape="s"
        ),
        probe_samples=probe_samples,
        records={"codeformer": {"trained": False}, "u2net": {"trained": True}},
        macs={"codeformer": 400e9, "u2net": 50e9},
        photos=["a.jpg"],
        scenarios=scenarios,
        instance_plan=plan_instances("cpu", cores=2),
        rss={"triton": {"tritonserver[1]": 100.0, "triton_python_backend_stub[2]": 50.0}},
        notes=[],
        reference_gmac={"codeformer": 405.0, "u2net": 58.6},
    )


def test_ratios_and_roofline():
    report = make_report()
    ratios = report["ratios"]
    assert ratios["triton_c4_over_sequential_enhanced"] == pytest.approx(3.0), "the faster sequential pass"
    assert ratios["triton_c4_over_sequential_basic"] == pytest.approx(2.0)
    assert ratios["gateway_over_grpc_c4_enhanced"] == pytest.approx(0.9)
    assert ratios["gateway_over_grpc_c1_enhanced"] is None
    # enhanced: 450 GMAC/image at 100 GFLOP/s → 1/9 images/s; best Triton 0.3 → 2.7× the bound
    assert report["roofline"]["enhanced"]["images_per_s"] == pytest.approx(100 / 900)
    assert ratios["end_to_end_over_roofline_enhanced"] == pytest.approx(0.3 * 9)
    # codeformer: 4 images × 400 GMAC × 2 / 2 s = 1600 GFLOP/s
    throughput = report["model_throughput"][0]
    assert throughput["gflops_achieved"] == pytest.approx(1600.0)
    # over the scenario's wall time (c1: 4 images in 40 s): 4 × 400 × 2 / 40 = 80 GFLOP/s, 0.8 of the probe
    assert throughput["gflops_over_wall"] == pytest.approx(80.0)
    assert throughput["wall_fraction_of_probe"] == pytest.approx(0.8)
    assert report["instance_plan"]["onnx_instances"] == 2
    assert report["instance_plan"]["onnx_threads"] == 1
    assert report["peak_rss_mib"]["triton"]["total"] == 150.0
    assert any("UNTRAINED" in note and "codeformer" in note for note in report["notes"])
    assert any("--device gpu" in note for note in report["notes"])


def test_markdown_has_every_section():
    markdown = render_markdown(make_report())
    for heading in (
        "## Machine",
        "## Models",
        "## Throughput and latency",
        "## Triton per-model statistics",
        "## Achieved model throughput",
        "## Roofline and ratios",
        "## Peak RSS (MiB)",
        "## Notes",
    ):
        assert heading in markdown
    assert "**untrained**" in markdown
    assert "| sequential (end) | True | 1 (1) | 4 / 4 | 0.080 |" in markdown
    assert "- Triton instance plan: cpu plan for 2 core(s): 2 instance(s)" in markdown
    assert "| triton_grpc | True | 4 (4) | 4 / 4 | 0.300 |" in markdown


def test_ratios_spanning_a_probe_dip_are_marked_disturbed():
    # probes: 0 start, then one after each scenario; a burst elsewhere during the enhanced c4 run (index 5)
    samples = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 99, 98, 100, 99, 60, 99, 100))]
    windows = [(i, i + 1) for i in range(7)]
    report = make_report(probe_samples=samples, windows=windows)
    series = report["conv_probe_series"]
    assert (series["min"], series["median"], series["max"]) == (60, 99, 100) and series["disturbed"]
    # triton enhanced c4 (window 4..5) over the sequential start pass (0..1) spans the dip
    assert "triton_c4_over_sequential_enhanced" in report["disturbed_ratios"]
    assert report["ratio_probe_spread"]["triton_c4_over_sequential_enhanced"] == pytest.approx(0.4)
    # basic: triton c4 (5..6) vs sequential basic (2..3) also spans index 5
    assert "triton_c4_over_sequential_basic" in report["disturbed_ratios"]
    # gateway enhanced c4 (6..7) vs triton enhanced c4 (4..5): spans the dip too
    assert "gateway_over_grpc_c4_enhanced" in report["disturbed_ratios"]
    markdown = render_markdown(report)
    assert "**DISTURBED**" in markdown and "median 99" in markdown


def test_steady_probes_mark_nothing():
    samples = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 99, 98, 100, 99, 97, 99, 100))]
    report = make_report(probe_samples=samples, windows=[(i, i + 1) for i in range(7)])
    assert report["disturbed_ratios"] == [] and not report["conv_probe_series"]["disturbed"]
    assert report["ratio_probe_spread"]["gateway_over_grpc_c4_enhanced"] == pytest.approx(0.03)
    assert "DISTURBED" not in render_markdown(report)


def test_a_second_plan_is_compared_to_the_first_and_kept_out_of_the_ratios():
    report = make_report()
    config = BenchConfig(preset="full", device="cpu", concurrency=[1, 4], requests=4, plans=("auto", "1"))
    other = {**report["scenarios"][4], "images_per_s": 0.6, "plan": "1"}  # triton enhanced c4, twice as fast
    scenarios = [{**s, "plan": "auto"} if s["scenario"] != "sequential" else s for s in report["scenarios"]]
    rebuilt = build_report(
        config=config, started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), machine=report["machine"],
        probe=ConvProbe(gflops=100.0, gmac_per_run=1.0, seconds_per_run=0.02, provider="cpu", shape="s"),
        records={}, macs={"codeformer": 400e9, "u2net": 50e9}, photos=["a.jpg"], scenarios=[*scenarios, other],
        instance_plan=plan_instances("cpu", cores=2), rss={}, notes=[], reference_gmac={},
    )  # fmt: skip
    assert rebuilt["ratios"]["triton_c4_over_sequential_enhanced"] == pytest.approx(3.0), "first plan only"
    (row,) = [r for r in rebuilt["plan_comparison"] if r["enhance"] and r["concurrency"] == 4]
    assert row["plan"] == "1" and row["over"] == "auto" and row["ratio"] == pytest.approx(2.0)
    markdown = render_markdown(rebuilt)
    assert "## Instance plans side by side" in markdown and "[plan 1]" in markdown


def _rebuilt(report, scenarios, probe_samples=None):
    return build_report(
        config=BenchConfig(preset="full", device="cpu", concurrency=[1, 4], requests=4, pairs=2),
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), machine=report["machine"],
        probe=ConvProbe(gflops=100.0, gmac_per_run=1.0, seconds_per_run=0.02, provider="cpu", shape="s"),
        probe_samples=probe_samples, records={}, macs={"codeformer": 400e9, "u2net": 50e9}, photos=["a.jpg"],
        scenarios=scenarios, instance_plan=plan_instances("cpu", cores=2), rss={}, notes=[], reference_gmac={},
    )  # fmt: skip


def test_paired_rounds_give_the_headline_ratio_their_median_and_their_worst_spread():
    # the machine sped up over the run (start pass 0.1, end pass 0.08 is slower here, but the
    # paired rounds say what Triton gains in the same minutes: 1.2, 1.5, 1.3 → median 1.3)
    report = make_report()
    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 100, 100, 100, 80, 100, 100, 100))]
    rounds = []
    for k, (triton, sequential, window) in enumerate(
        ((0.36, 0.3, (0, 1)), (0.45, 0.3, (2, 3)), (0.39, 0.3, (4, 6))), start=1
    ):
        rounds += [
            {**scenario("sequential", True, 1, sequential), "pass": f"pair {k}", "pair": k,
             "probe_window": (window[0], window[0] + 1)},
            {**scenario("triton_grpc", True, 4, triton), "pair": k, "probe_window": (window[0] + 1, window[1] + 1)},
        ]  # fmt: skip
    rebuilt = _rebuilt(report, [*report["scenarios"], *rounds], probes)
    assert rebuilt["ratios"]["triton_c4_over_sequential_enhanced"] == pytest.approx(1.3)
    paired = rebuilt["paired_ratios"]["triton_c4_over_sequential_enhanced"]
    assert [r["ratio"] for r in paired["rounds"]] == pytest.approx([1.2, 1.5, 1.3])
    assert (paired["min"], paired["max"]) == (pytest.approx(1.2), pytest.approx(1.5))
    # the third round spans the 80 GFLOP/s probe: its spread (20 %) is the ratio's
    assert rebuilt["ratio_probe_spread"]["triton_c4_over_sequential_enhanced"] == pytest.approx(0.2)
    assert "triton_c4_over_sequential_enhanced" in rebuilt["disturbed_ratios"]
    # basic has no paired rounds: the faster of the passes, as before
    assert rebuilt["ratios"]["triton_c4_over_sequential_basic"] == pytest.approx(2.0)
    markdown = render_markdown(rebuilt)
    assert "by paired round" in markdown and "| triton_grpc (pair 2) | True | 4 (4) |" in markdown


def test_the_roofline_ratio_divides_by_the_probes_around_its_own_scenario():
    report = make_report()
    # enhanced: 450 GMAC/image. Triton c4 0.3 img/s ran between probes of 50 and 70 GFLOP/s (the
    # machine was slow then): the roofline at the higher, 70 → 70/900 img/s, so 0.3 is 3.86× it;
    # the run's highest probe (100) would call it 2.7×
    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 100, 100, 100, 50, 70, 100, 100))]
    windows = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    scenarios = [{**s, "probe_window": w} for s, w in zip(report["scenarios"], windows, strict=True)]
    rebuilt = _rebuilt(report, scenarios, probes)
    assert rebuilt["ratios"]["end_to_end_over_roofline_enhanced"] == pytest.approx(0.3 * 900 / 70)
    assert rebuilt["roofline"]["enhanced"]["best_scenario"]["probe_gflops"] == pytest.approx(70)
    assert rebuilt["ratios"]["end_to_end_over_max_probe_roofline_enhanced"] == pytest.approx(2.7)
    assert "the higher of the probes before and after it" in render_markdown(rebuilt)


def test_the_model_bound_is_the_models_alone_times_the_instances():
    # each model alone: codeformer 8 s, u2net 2 s per image; 2 instances → enhanced 2 / 10 = 0.2
    # img/s, basic 2 / 2 = 1 img/s; best Triton enhanced 0.3 (c4) → 1.5× the bound, basic 1.0 → 1.0×
    report = make_report()
    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 90))]
    bound = {"threads": 1, "instances": 2, "seconds_per_image": {"codeformer": 8.0, "u2net": 2.0}, "runs": 2,
             "probe_window": (0, 1)}  # fmt: skip
    rebuilt = build_report(
        config=BenchConfig(preset="full", device="cpu", concurrency=[1, 4], requests=4),
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), machine=report["machine"],
        probe=ConvProbe(gflops=100.0, gmac_per_run=1.0, seconds_per_run=0.02, provider="cpu", shape="s"),
        probe_samples=probes, records={}, macs={"codeformer": 400e9, "u2net": 50e9}, photos=["a.jpg"],
        scenarios=report["scenarios"], instance_plan=plan_instances("cpu", cores=2), model_bound=bound, rss={},
        notes=[], reference_gmac={},
    )  # fmt: skip
    assert rebuilt["model_bound"]["images_per_s"] == {
        "enhanced": pytest.approx(0.2),
        "basic": pytest.approx(1.0),
    }
    assert rebuilt["ratios"]["end_to_end_over_model_bound_enhanced"] == pytest.approx(1.5)
    assert rebuilt["ratios"]["end_to_end_over_model_bound_basic"] == pytest.approx(1.0)
    assert "model bound (each ONNX model alone" in render_markdown(rebuilt)


def test_a_saved_report_is_rebuilt_with_the_same_measurements(tmp_path):
    import json

    from facecraft.bench.report import rebuild

    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 100, 100, 100, 50, 70, 100, 100))]
    windows = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    report = make_report(probe_samples=probes, windows=windows)
    stale = {**report, "ratios": {**report["ratios"], "end_to_end_over_roofline_enhanced": 99.0}}
    path = tmp_path / "20260101T000000Z-full-cpu.json"
    path.write_text(json.dumps(stale))
    md_path, json_path = rebuild(path)
    rebuilt = json.loads(json_path.read_text())
    assert rebuilt["ratios"] == pytest.approx(report["ratios"])
    assert rebuilt["scenarios"] == json.loads(json.dumps(report["scenarios"]))
    assert rebuilt["notes"] == report["notes"], "the generated notes are not doubled"
    assert md_path.read_text().startswith("# Facecraft benchmark")


def test_generated_notes_are_kept_apart_from_the_harness_notes():
    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 90))]
    report = make_report(probe_samples=probes)
    assert report["measurement_notes"] == []
    assert any(n.startswith("conv probe GFLOP/s at the start, after every scenario and at the end: 100, 90;")
               for n in report["notes"])  # fmt: skip
    assert not any(n.startswith("triton_c4_over_sequential") for n in report["notes"]), "no paired rounds"


def _write_onnx_conv(path, out_channels: int) -> None:
    """A one-Conv graph [N,3,8,8] → [N,out_channels,8,8]: 3·9·64·out_channels MACs per sample."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((out_channels, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[weight],
    )
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_version_4_report_is_rebuilt_only_with_its_macs_counted_again(tmp_path):
    """Version 4 counted CodeFormer at 337 of 405 GMAC: rebuild refuses to keep that count, and
    with the model repository counts again, strips the old generated notes and says so."""
    import json

    from facecraft.bench.report import rebuild

    probes = [{"label": str(i), "gflops": g} for i, g in enumerate((100, 90))]
    report = make_report(probe_samples=probes)
    legacy = {k: v for k, v in report.items() if k != "measurement_notes"}
    legacy["report_version"] = 4
    legacy["notes"] = [*report["notes"], "gateway scenario not run: test"]
    path = tmp_path / "20260101T000000Z-full-cpu.json"
    path.write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="--rebuild-report JSON --repo DIR"):
        rebuild(path)
    repo = tmp_path / "repo"
    _write_onnx_conv(repo / "codeformer" / "1" / "model.onnx", 16)
    _write_onnx_conv(repo / "u2net" / "1" / "model.onnx", 8)
    rebuild(path, model_repository=repo)
    rebuilt = json.loads(path.read_text())
    assert rebuilt["report_version"] >= 5
    assert rebuilt["models"]["codeformer"]["gmac_per_image"] == pytest.approx(3 * 9 * 64 * 16 / 1e9)
    assert rebuilt["models"]["u2net"]["gmac_per_image"] == pytest.approx(3 * 9 * 64 * 8 / 1e9)
    assert rebuilt["measurement_notes"][0] == "gateway scenario not run: test"
    assert rebuilt["measurement_notes"][1].startswith("GMAC recounted from")
    assert "codeformer 400.0, u2net 50.0 before" in rebuilt["measurement_notes"][1]
    probe_notes = [n for n in rebuilt["notes"] if n.startswith("conv probe GFLOP/s")]
    assert len(probe_notes) == 1, "the generated probe note is not doubled"
    # the recounted report is version 5: a later rebuild keeps its count
    rebuild(path)
    assert json.loads(path.read_text())["models"] == rebuilt["models"]
