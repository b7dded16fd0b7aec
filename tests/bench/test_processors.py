"""``facecraft bench --processor NAME`` (``facecraft.bench.processors``): input kinds and photos from
the registry; a real run on the session Triton (tiny, untrained) and the report it writes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from facecraft import processors as registry
from facecraft.bench.harness import BenchConfig, export_records, instance_plan, write_report
from facecraft.bench.processors import (
    GROUP_PHOTOS,
    INPUT_KINDS,
    input_kind,
    measure_processor,
    photo_names,
    render_processor_markdown,
)
from facecraft.cli import main


def test_every_registered_processor_has_an_input_kind_the_bench_can_feed():
    for processor in registry.PROCESSORS.values():
        assert input_kind(processor) is INPUT_KINDS[processor.input_kind]


def test_an_input_kind_the_bench_cannot_feed_is_refused_by_name():
    pair = replace(registry.get("face_enhancer"), name="face_swapper", input_kind="image_pair")
    with pytest.raises(ValueError, match="face_swapper takes input 'image_pair'.*feeds image"):
        input_kind(pair)


def test_face_processors_run_over_group_photos_the_others_over_the_default_set():
    assert photo_names(registry.get("face_enhancer")) == GROUP_PHOTOS
    assert photo_names(registry.get("face_analyser")) == GROUP_PHOTOS
    assert photo_names(registry.get("background_remover")) is None
    assert photo_names(registry.get("portrait")) is None


def test_the_cli_offers_the_registry_processors_only(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--processor", "nosuch"])
    assert "face_enhancer" in capsys.readouterr().err


@pytest.mark.integration
def test_face_enhancer_bench_on_the_session_triton_writes_a_complete_report(triton_server, tmp_path):
    config = BenchConfig(preset="tiny", concurrency=[1, 2], requests=2, out_dir=tmp_path)
    report = measure_processor(
        config,
        "face_enhancer",
        grpc_url=triton_server.grpc_url,
        stats_url=triton_server.http_url,
        records=export_records(Path(triton_server.repo)),
        plan=instance_plan(config),
    )
    assert (report["kind"], report["processor"], report["ensemble"]) == (
        "processor",
        "face_enhancer",
        "face_enhancer",
    )
    assert report["photos"] == list(GROUP_PHOTOS)
    assert [s["concurrency"] for s in report["scenarios"]] == [1, 2] == report["concurrency"]
    for scenario in report["scenarios"]:
        assert scenario["ok"] == scenario["requests"] == 2 and scenario["failed"] == 0
        assert scenario["images_per_s"] > 0 and scenario["processor"] == "face_enhancer"
        steps = {model["model"]: model for model in scenario["triton_models"]}
        # group photos: every face of an image restored in one batch
        assert steps["codeformer"]["inferences"] > steps["codeformer"]["requests"] > 0
    assert set(report["images_per_s"]) == {"c1", "c2"}
    # a probe at the start, after each concurrency and at the end; the ratio spans c1..c2
    series = report["conv_probe_series"]
    assert series["count"] == 4 and 0 <= series["spread"] <= 1
    assert report["ratio"]["name"] == "c2_over_c1" and report["ratio"]["value"] > 0
    assert report["ratio"]["disturbed"] == (report["ratio"]["probe_spread"] > series["threshold"])
    assert report["models"]["codeformer"]["trained"] is False
    assert any("UNTRAINED" in note and "codeformer" in note for note in report["notes"])

    started = datetime.fromisoformat(report["timestamp"])
    md_path, json_path = write_report(tmp_path, started, "processor-face_enhancer-tiny-cpu", report,
                                      render_processor_markdown(report))  # fmt: skip
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    markdown = md_path.read_text()
    assert "`face_enhancer`" in markdown and "c2_over_c1" in markdown and "**untrained**" in markdown
