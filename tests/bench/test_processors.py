"""``facecraft bench --processor NAME`` (``facecraft.bench.processors``): input kinds and photos from
the registry; a real run on the session Triton (tiny, untrained) and the report it writes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from facecraft import processors as registry
from facecraft.bench.harness import (
    BenchConfig,
    export_missing,
    export_records,
    instance_plan,
    onnx_models,
    write_report,
)
from facecraft.bench.processors import (
    GROUP_PHOTOS,
    INPUT_KINDS,
    PORTRAIT,
    fit_photo,
    input_kind,
    measure_processor,
    measure_video,
    photo_names,
    render_processor_markdown,
    render_video_markdown,
    triton_models,
    video_processor,
    write_bench_clip,
)
from facecraft.cli import main


def test_every_registered_processor_has_an_input_kind_the_bench_can_feed():
    for processor in registry.PROCESSORS.values():
        expected = PORTRAIT if processor.name == "portrait" else INPUT_KINDS[processor.input_kind]
        assert input_kind(processor) is expected


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
        triton_pid=triton_server.pid,
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
    # the Triton process tree (server + stubs) after the last short-clip run and after the long one
    triton = rss["triton"]
    assert triton["after_short"] == streaming["triton_rss_mib"]
    assert triton["after_long"] == report["runs"][2]["triton_rss_mib"]
    assert 0 < triton["after_long"]["current"] <= triton["after_long"]["peak"]
    assert report["models"]["codeformer"]["trained"] is False
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed after each run

    started = datetime.fromisoformat(report["timestamp"])
    md_path, json_path = write_report(tmp_path, started, "processor-video-face_enhancer-tiny-cpu", report,
                                      render_video_markdown(report))  # fmt: skip
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    markdown = md_path.read_text()
    assert "streaming_over_sequential" in markdown and "peak RSS" in markdown and "**untrained**" in markdown
    assert "Triton process tree" in markdown


def test_bench_video_needs_a_processor(capsys):
    assert main(["bench", "--video"]) != 0
    assert "--video goes with --processor" in capsys.readouterr().err


def test_the_bench_exports_and_loads_what_the_registry_lists_for_a_processor():
    # ONNX models (export catalog) of the registry entry, in its order; Triton loads its ensembles too
    assert onnx_models(registry.get("face_swapper")) == ("arcface_w600k_r50", "inswapper_128", "codeformer")
    assert onnx_models(registry.get("frame_enhancer")) == ("realesrgan_x4plus", "realesrgan_x2plus")
    assert onnx_models(registry.get("face_analyser")) == ()
    assert triton_models(registry.get("face_enhancer")) == (
        "face_enhancer", "faces", "face_enhance", "codeformer", "realesrgan_x2plus",
    )  # fmt: skip


def test_photos_are_scaled_down_to_the_longest_side_asked(tmp_path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(buffer, format="PNG")
    scaled = Image.open(io.BytesIO(fit_photo(buffer.getvalue(), 96)))
    assert (scaled.format, scaled.size) == ("JPEG", (96, 64))
    assert fit_photo(buffer.getvalue(), 300) == buffer.getvalue()  # already fits: unchanged
    with pytest.raises(ValueError, match="positive"):
        fit_photo(buffer.getvalue(), 0)


@pytest.fixture(scope="module")
def registry_models(triton_server):
    """The session Triton with every ONNX model the registry lists exported by the bench's own
    export step (tiny, seeded random) and loaded; the ones it added are unloaded and removed after."""
    from facecraft.bench.harness import ONNX_MODELS
    from tests.fixtures.exported import _post, unload_and_remove
    from tests.fixtures.triton import restart_if_unhealthy

    restart_if_unhealthy(triton_server, "the bench's registry-models fixture")
    repo = Path(triton_server.repo)
    wanted = tuple(dict.fromkeys(m for p in registry.PROCESSORS.values() for m in onnx_models(p)))
    added = [name for name in wanted if not (repo / name / "1" / "model.onnx").is_file()]
    try:
        export_missing(repo, wanted, preset="tiny")
        for name in added:
            _post(triton_server, f"/v2/repository/models/{name}/load")
        yield triton_server
    finally:
        unload_and_remove(triton_server, [name for name in added if name not in ONNX_MODELS])


@pytest.mark.integration
@pytest.mark.parametrize("name", registry.names())
def test_every_registry_processor_can_be_benched(registry_models, tmp_path, name):
    """One request per processor through the bench's measurement (tiny models exported by the
    bench's export step from the registry); no timing is asserted."""
    processor = registry.get(name)
    # frame_enhancer upscales the whole photo: small photos keep the test quick
    config = BenchConfig(
        preset="tiny", concurrency=[1], requests=1, out_dir=tmp_path,
        photo_max_side=96 if name == "frame_enhancer" else None,
    )  # fmt: skip
    repo = Path(registry_models.repo)
    report = measure_processor(
        config, name, grpc_url=registry_models.grpc_url, stats_url=registry_models.http_url,
        records=export_records(repo, onnx_models(processor)), plan=instance_plan(config),
    )  # fmt: skip
    (scenario,) = report["scenarios"]
    assert (scenario["ok"], scenario["failed"], scenario["errors"]) == (1, 0, [])
    assert set(report["models"]) == set(onnx_models(processor))
    assert all(model["preset"] == "tiny" and model["trained"] is False for model in report["models"].values())


@pytest.mark.integration
def test_the_video_bench_gives_face_swapper_one_identity_for_every_frame(registry_models, tmp_path):
    """face_swapper on video: the identity photo is embedded once per run (ArcFace +1 per run, not
    per frame) and every frame's face is swapped (the generator +1 per frame)."""
    from tests.fixtures.exported import model_counts

    def inferences() -> tuple[int, int]:
        return tuple(model_counts(registry_models, m)[1] for m in ("arcface_w600k_r50", "inswapper_128"))

    config = BenchConfig(preset="tiny", out_dir=tmp_path)
    before = inferences()
    report = measure_video(
        config, "face_swapper", grpc_url=registry_models.grpc_url,
        records=export_records(Path(registry_models.repo), onnx_models(registry.get("face_swapper"))),
        plan=instance_plan(config), work_dir=tmp_path / "work", clip_seconds=(0.3, 0.5), repeats=1, max_in_flight=2,
    )  # fmt: skip
    after = inferences()
    runs = report["runs"]
    assert [run["frames_without_face"] for run in runs] == [0] * len(runs)
    frames = sum(run["frames"] for run in runs)
    assert (after[0] - before[0], after[1] - before[1]) == (len(runs), frames)
