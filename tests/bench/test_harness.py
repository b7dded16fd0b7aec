"""``facecraft bench --preset tiny --quick``: the report is produced and well formed (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from facecraft.cli import main

pytestmark = pytest.mark.integration


def test_quick_tiny_bench_writes_a_complete_report(tmp_path, tiny_model_repo, capsys):
    import shutil

    repo = tmp_path / "bench-repo"
    shutil.copytree(tiny_model_repo, repo)  # reuse the session's tiny exports; the bench refreshes configs
    out = tmp_path / "results"
    code = main(["bench", "--preset", "tiny", "--quick", "--requests", "2", "--concurrency", "1,2",
                 "--out", str(out), "--repo", str(repo), "--plans", "auto,1", "--pairs", "1"])  # fmt: skip
    assert code == 0
    json_files, md_files = sorted(out.glob("*-tiny-cpu.json")), sorted(out.glob("*-tiny-cpu.md"))
    assert len(json_files) == 1 and len(md_files) == 1
    report = json.loads(json_files[0].read_text())
    for key in (
        "machine",
        "conv_probe",
        "models",
        "scenarios",
        "model_throughput",
        "roofline",
        "ratios",
        "peak_rss_mib",
        "notes",
    ):
        assert key in report, key
    assert report["conv_probe"]["gflops"] > 0
    # a probe at the start, after the model bound, after every scenario and at the end; each
    # scenario between two of them
    series = report["conv_probe_series"]
    assert series["count"] == len(report["scenarios"]) + 3 == len(series["samples"])
    assert series["min"] <= series["median"] <= series["max"] == report["conv_probe"]["gflops"]
    assert all(s["probe_window"][1] == s["probe_window"][0] + 1 for s in report["scenarios"])
    assert set(report["ratio_probe_spread"]) == set(report["ratios"])
    # the second instance plan ran in its own Triton, side by side with the first
    assert report["plans"] == ["auto", "1"]
    second = [s for s in report["scenarios"] if s.get("plan") == "1"]
    assert {(s["scenario"], s["enhance"], s["concurrency"]) for s in second} == {
        ("triton_grpc", e, c) for e in (True, False) for c in (1, 2)
    }
    assert all(row["ratio"] > 0 for row in report["plan_comparison"])
    assert len(report["plan_comparison"]) == 4
    assert all(report["models"][m]["gmac_per_image"] > 0 for m in ("codeformer", "u2net"))
    assert any("UNTRAINED" in note for note in report["notes"])
    seen = {(s["scenario"], s["enhance"], s["concurrency"]) for s in report["scenarios"]}
    passes = sorted((s["pass"], s["enhance"]) for s in report["scenarios"] if s["scenario"] == "sequential")
    assert passes == [("end", False), ("end", True), ("pair 1", False), ("pair 1", True), ("start", False),
                      ("start", True)]  # fmt: skip
    # one paired round per mode: a sequential pass right before Triton at the top concurrency,
    # and the headline ratio is that round's
    for label, enhance in (("enhanced", True), ("basic", False)):
        (pair,) = report["paired_ratios"][f"triton_c2_over_sequential_{label}"]["rounds"]
        triton = [s for s in report["scenarios"] if s["scenario"] == "triton_grpc" and s.get("pair") == 1
                  and s["enhance"] == enhance]  # fmt: skip
        assert len(triton) == 1 and triton[0]["concurrency"] == 2 and triton[0]["plan"] == "auto"
        assert report["ratios"][f"triton_c2_over_sequential_{label}"] == pytest.approx(pair["ratio"])
        assert report["roofline"][label]["best_scenario"]["probe_gflops"] > 0
        assert report["ratios"][f"end_to_end_over_model_bound_{label}"] > 0
    # each ONNX model timed alone once (--quick) with the plan's threads, between two probes
    bound = report["model_bound"]
    assert set(bound["seconds_per_image"]) == {"codeformer", "u2net"} and bound["runs"] == 1
    assert all(seconds > 0 for seconds in bound["seconds_per_image"].values())
    assert bound["threads"] == report["instance_plan"]["onnx_threads"]
    for enhance in (True, False):
        assert ("sequential", enhance, 1) in seen
        for concurrency in (1, 2):
            assert ("triton_grpc", enhance, concurrency) in seen
    for s in report["scenarios"]:
        assert s["ok"] == s["requests"] == 2, s
        assert s["images_per_s"] > 0 and s["latency_ms"]["p50"] > 0
    triton = [s for s in report["scenarios"] if s["scenario"] == "triton_grpc"]
    models = {d["model"] for s in triton for d in s["triton_models"]}
    assert {"decode", "detect", "u2net", "compose", "codeformer"} <= models
    assert all(d["avg_batch_size"] >= 1 for s in triton for d in s["triton_models"])
    assert report["peak_rss_mib"]["triton"]["total"] > 0
    gateway = [s for s in report["scenarios"] if s["scenario"] == "gateway_http"]
    assert gateway or any("gateway scenario not run" in note for note in report["notes"])
    markdown = md_files[0].read_text()
    for heading in (
        "## Machine",
        "## Throughput and latency",
        "## Triton per-model statistics",
        "## Roofline and ratios",
    ):
        assert heading in markdown
