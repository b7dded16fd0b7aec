"""Micro-benchmark helpers: turn-taking, deviation metrics, and the steps report (no timing asserted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from facecraft.bench.micro import alpha_deviation, alternate, crop_deviation, run_steps


def test_alternate_runs_the_variants_in_turns_after_one_warm_up_each():
    calls = []
    seconds = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3}


def test_alpha_deviation_of_the_pipeline_alpha():
    seg = np.zeros((1, 40, 40), np.float32)
    seg[0, 10:30, 10:30] = 1.0
    same = alpha_deviation(seg, seg.copy())
    assert same["alpha_mae"] == 0.0 and same["alpha_iou_at_0_5"] == 1.0
    assert same["foreground_fraction"] == pytest.approx(400 / 1600)
    shifted = np.roll(seg, 10, axis=2)  # half of the square moves out of the original
    assert alpha_deviation(seg, shifted)["alpha_iou_at_0_5"] == pytest.approx(200 / 600)
    # min-max normalisation first, as in the pipeline: a scaled map is the same alpha
    assert alpha_deviation(seg, seg * 0.5)["alpha_mae"] == 0.0


def test_crop_deviation_psnr_and_ssim():
    rng = np.random.default_rng(0)
    crop = rng.uniform(-1, 1, (3, 64, 64)).astype(np.float32)
    same = crop_deviation(crop, crop.copy())
    assert math.isinf(same["psnr_db"]) and same["ssim"] == pytest.approx(1.0)
    noisy = crop_deviation(crop, crop + rng.normal(0, 0.05, crop.shape).astype(np.float32))
    assert 20 < noisy["psnr_db"] < 40 and noisy["ssim"] < 1.0


def test_steps_report_compares_before_and_after_on_a_real_photo(faces_dir, tmp_path):
    md_path, json_path = run_steps(
        [faces_dir / "fr__obama_small.jpg"], repeats=1, caps_kb=(200, 20), out_dir=tmp_path
    )
    report = json.loads(json_path.read_text())
    (row,) = report["compose"]
    assert all(candidate["same_pixels"] for candidate in row["png"].values())
    assert {"pillow_6 (before)", "encode_png (after)"} <= set(row["png"])
    assert all(j["same_bytes"] for j in row["jpeg"].values())
    assert row["composite"]["same_pixels"] and row["composite"]["after"]["median_ms"] > 0
    assert "## Compositing on the background" in md_path.read_text()
    assert row["jpeg"]["20"]["encodes_before"] > 1 and row["jpeg"]["200"]["encodes_after"] == 1
    assert report["conv_probe_series"]["count"] == 3 and row["probe_window"] == [0, 1]
    assert "## JPEG size cap" in md_path.read_text()
    (detect,) = report["detect"]
    assert detect["faces_before"] == detect["faces_after"] == 1 and detect["worst_box_iou"] > 0.7
    assert {"detect rgb (pipeline)", "detect gray (candidate)"} <= set(detect) and detect[
        "speedup_median"
    ] > 0
    assert report["detection_coverage"] is None


def test_steps_report_has_detection_coverage_and_landmark_error(faces_dir, tmp_path):
    from facecraft.bench.micro import detection_coverage

    photos = tmp_path / "faces"
    photos.mkdir()
    for name in ("dlib__2008_001009.jpg", "dlib__2009_004587.jpg"):
        (photos / name).write_bytes((faces_dir / name).read_bytes())
    coverage = detection_coverage(photos)
    assert [(p["faces_before"], p["faces_after"]) for p in coverage["photos"]] == [(2, 2), (2, 2)]
    for result in coverage["landmarks"].values():
        assert result["faces_matched"] == result["faces_annotated"] == 4
        assert 0 < result["nme_mean"] < 0.05 and len(result["missing"]) == 7
    from facecraft.bench.micro import render_steps

    text = render_steps(
        {
            "timestamp": "t",
            "conv_probe_series": _steady(),
            "compose": [],
            "detect": [],
            "detection_coverage": coverage,
        }
    )
    assert "## Landmark error on dlib's annotated faces" in text and "4 / 4" in text


def _steady() -> dict:
    return {"count": 2, "min": 100.0, "median": 100.0, "max": 100.0, "spread": 0.0, "disturbed": False}


def test_precision_report_compares_two_files_on_the_same_inputs(tiny_model_repo, faces_dir, tmp_path):
    import shutil

    from facecraft.bench.micro import run_precision

    repo = tmp_path / "repo"
    for name in ("u2net", "codeformer"):
        shutil.copytree(tiny_model_repo / name, repo / name)
        # the fp32 graph under the int8 name: the plumbing must report no deviation at all
        shutil.copy(repo / name / "1" / "model.onnx", repo / name / "1" / "model.int8.onnx")
    md_path, json_path = run_precision(
        repo,
        [faces_dir / "cf__Hepburn01.png"],
        preset="tiny",
        threads=(1,),
        repeats=1,
        out_dir=tmp_path / "out",
    )
    report = json.loads(json_path.read_text())
    by_model = {r["model"]: r for r in report["results"]}
    assert by_model["u2net"]["deviation_mean"]["alpha_mae"] == 0.0
    assert by_model["u2net"]["deviation_worst"]["alpha_iou_at_0_5"] == 1.0
    assert math.isinf(by_model["codeformer"]["deviation_mean"]["psnr_db"])
    assert by_model["codeformer"]["deviation_worst"]["ssim"] == pytest.approx(1.0)
    assert all(r["speedup_median"] > 0 and r["images"] >= 1 for r in report["results"])
    assert report["conv_probe_series"]["count"] == 4 and report["trained"] == {
        "u2net": False,
        "codeformer": False,
    }
    assert "**UNTRAINED**" in md_path.read_text()
    with pytest.raises(FileNotFoundError, match="--precision fp16"):
        run_precision(
            repo, [faces_dir / "cf__Hepburn01.png"], precision="fp16", preset="tiny", out_dir=tmp_path
        )
