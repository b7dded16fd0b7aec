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
    measure_video,
    photo_names,
    render_processor_markdown,
    render_video_markdown,
    video_processor,
    write_bench_clip,
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


def test_video_bench_refuses_an_image_only_processor():
    with pytest.raises(ValueError, match="portrait works on one image at a time only"):
        video_processor("portrait")
    assert video_processor("face_enhancer").name == "face_enhancer"


def test_the_bench_clip_has_the_frames_fps_size_and_a_sine_track_it_reports(tmp_path):
    from facecraft.pipeline.video import probe_video

    clip = write_bench_clip(tmp_path / "clip.mp4", 1.0, fps=10, size=(96, 64))
    info = probe_video(tmp_path / "clip.mp4")
    assert clip == {"seconds": 1.0, "frames": 10, "fps": 10, "width": 96, "height": 64}
    assert (info.frames, info.fps, info.width, info.height) == (10, 10, 96, 64)
    assert info.audio is not None and info.audio.codec == "aac"


@pytest.mark.integration
def test_face_enhancer_video_bench_on_the_session_triton_writes_a_complete_report(triton_server, tmp_path):
    config = BenchConfig(preset="tiny", out_dir=tmp_path)
    report = measure_video(
        config,
        "face_enhancer",
        grpc_url=triton_server.grpc_url,
        records=export_records(Path(triton_server.repo)),
        plan=instance_plan(config),
        work_dir=tmp_path / "work",
        clip_seconds=(0.5, 1.0),
        repeats=1,
        max_in_flight=4,
    )
    assert (report["kind"], report["processor"], report["ensemble"]) == (
        "processor_video",
        "face_enhancer",
        "face_enhancer",
    )
    assert report["clips"]["0.5s"]["frames"] == 5 and report["clips"]["1s"]["frames"] == 10
    assert [(r["mode"], r["clip"]) for r in report["runs"]] == [
        ("sequential", "0.5s"),
        ("streaming", "0.5s"),
        ("streaming", "1s"),
    ]
    for run, frames in zip(report["runs"], (5, 5, 10), strict=True):
        assert run["frames"] == frames and run["frames_per_s"] > 0
        assert run["frames_without_face"] == 0  # the face of every generated frame is restored
        assert 0 < run["baseline_rss_mib"] <= run["peak_rss_mib"]
    sequential, streaming, _ = report["runs"]
    assert sequential["max_frames_in_flight"] == 1
    assert 1 <= streaming["max_frames_in_flight"] <= streaming["max_in_flight"] == 4
    assert report["frames_per_s"] == {
        "sequential": sequential["frames_per_s"],
        "streaming": streaming["frames_per_s"],
        "clip": "0.5s",
    }
    ratio = report["ratio"]
    assert ratio["name"] == "streaming_over_sequential"
    assert ratio["value"] == pytest.approx(streaming["frames_per_s"] / sequential["frames_per_s"])
    assert ratio["target_reached"] == (ratio["value"] >= 1.1)
    assert ratio["disturbed"] == (ratio["probe_spread"] > report["conv_probe_series"]["threshold"])
    assert report["conv_probe_series"]["count"] == 4  # start + one after each run
    rss = report["peak_rss_mib"]
    assert rss["streaming"] == {"0.5s": streaming["peak_rss_mib"], "1s": report["runs"][2]["peak_rss_mib"]}
    assert rss["growth_mib"] == pytest.approx(rss["streaming"]["1s"] - rss["streaming"]["0.5s"])
    assert report["models"]["codeformer"]["trained"] is False
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed after each run

    started = datetime.fromisoformat(report["timestamp"])
    md_path, json_path = write_report(tmp_path, started, "processor-video-face_enhancer-tiny-cpu", report,
                                      render_video_markdown(report))  # fmt: skip
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    markdown = md_path.read_text()
    assert "streaming_over_sequential" in markdown and "peak RSS" in markdown and "**untrained**" in markdown


def test_bench_video_needs_a_processor(capsys):
    assert main(["bench", "--video"]) != 0
    assert "--video goes with --processor" in capsys.readouterr().err
