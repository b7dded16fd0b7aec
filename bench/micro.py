"""Micro-benchmarks that compare two ways of doing one step side by side, in one run.

- ``facecraft bench-steps``: the Python steps of the portrait (PNG encoding: Pillow level 6, the
  encoder before, against ``facecraft.pipeline.compose.encode_png``; the JPEG size-cap search:
  the linear walk before against ``encode_jpeg_capped``, with encode counts; the whole compose
  step; face detection, HOG on RGB before against HOG on the luma after, with face counts and box
  IoU), on the benchmark photos; with a faces folder (the CLI's default: ../shared/data/faces),
  the detection's face counts on all its photos and the landmark error on dlib's annotated faces
  (``facecraft.bench.landmarks``), before and after.
- ``facecraft bench-precision``: each ONNX model at fp32 against its ``model.int8.onnx`` (or
  ``model.fp16.onnx``) export on the same inputs: per-image time, speed-up, and the deviation of
  the output (U²-Net: alpha MAE and IoU at 0.5 of the pipeline's normalised alpha; CodeFormer:
  PSNR / SSIM of the restored 512² crop).

Both alternate the two variants (A, B, A, B, …) so a neighbour's burst hits both, probe the conv
throughput before, between and after (``facecraft.bench.probes``), and write
``<out>/<UTC timestamp>-<kind>.{json,md}``.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facecraft.bench.machine import conv_probe, describe_machine
from facecraft.bench.probes import DISTURBED_SPREAD, ProbeLog, summary
from facecraft.client.batch import write_atomically


def alternate(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, run in turns (one warm-up call each first)."""
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def timing(values: list[float]) -> dict:
    """min / median / max milliseconds of ``values`` (seconds)."""
    return {
        "min_ms": 1000 * min(values),
        "median_ms": 1000 * statistics.median(values),
        "max_ms": 1000 * max(values),
        "runs": len(values),
    }


def alpha_deviation(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """U²-Net fused maps → the pipeline's normalised alpha ([0, 1]); MAE and IoU of alpha > 0.5."""
    from facecraft.pipeline.segment import normalise_map

    a, b = normalise_map(reference), normalise_map(candidate)
    union = np.logical_or(a > 0.5, b > 0.5).sum()
    return {
        "alpha_mae": float(np.abs(a - b).mean()),
        "alpha_iou_at_0_5": float(np.logical_and(a > 0.5, b > 0.5).sum() / union) if union else 1.0,
        "foreground_fraction": float((a > 0.5).mean()),
    }


def crop_deviation(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """CodeFormer outputs [3, H, W] → restored uint8 crops (``from_network``); PSNR (dB) and SSIM."""
    from facecraft.pipeline.align import from_network

    a, b = from_network(reference), from_network(candidate)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    result = {"psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)), "ssim": None}
    try:
        from skimage.metrics import structural_similarity
    except ImportError:  # scikit-image is a dev dependency
        return result
    result["ssim"] = float(structural_similarity(a, b, channel_axis=2, data_range=255))
    return result


def _write(out_dir: Path, stem: str, report: dict, markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_atomically(json_path, json.dumps(report, indent=2).encode())
    write_atomically(md_path, markdown.encode())
    return md_path, json_path


def _probe_text(series: dict) -> str:
    verdict = "**DISTURBED**" if series["disturbed"] else "steady"
    return (
        f"conv probe ({series['count']} probes): min {series['min']:.0f}, median {series['median']:.0f}, "
        f"max {series['max']:.0f} GFLOP/s, spread {series['spread']:.0%} — {verdict} "
        f"(threshold {DISTURBED_SPREAD:.0%})"
    )


# --- precision ---------------------------------------------------------------------------------


def precision_inputs(name: str, preset: str, photos: list[Path]) -> list[dict[str, np.ndarray]]:
    """Network inputs from ``photos`` (the pipeline's pre-processing); CodeFormer at fidelity 0.7."""
    from facecraft.export.models import resolve
    from facecraft.export.quantize import calibration_inputs

    feeds = calibration_inputs(resolve(name, None, preset), photos)
    if name == "codeformer":  # calibration_inputs makes three fidelities per face; measure at 0.7
        feeds = [{**feed, "w": np.array([[0.7]], np.float32)} for feed in feeds[::3]]
    return feeds


def _compare_precisions(
    name: str,
    paths: dict[str, Path],
    feeds: list[dict],
    threads: int,
    repeats: int,
    probes: ProbeLog,
    precision: str,
    device: str = "cpu",
) -> dict:
    """fp32 and ``precision`` sessions of one model with ``threads`` threads (CPU) or on the CUDA
    execution provider (``device="gpu"``), in turns on ``feeds``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
    )
    sessions = {p: ort.InferenceSession(str(path), options, providers=providers) for p, path in paths.items()}
    outputs = {p: [s.run(None, feed)[0][0] for feed in feeds] for p, s in sessions.items()}
    before = probes.last
    seconds = alternate(
        {p: (lambda s=s: [s.run(None, feed) for feed in feeds]) for p, s in sessions.items()}, repeats
    )
    after = probes.take(f"after {name} {threads} thread(s)")
    per_image = {p: [v / len(feeds) for v in values] for p, values in seconds.items()}
    deviation_of = crop_deviation if name == "codeformer" else alpha_deviation  # the U²-Net models
    deviations = [deviation_of(a, b) for a, b in zip(outputs["fp32"], outputs[precision], strict=True)]
    measured = [k for k, v in deviations[0].items() if v is not None]
    worst = {
        k: (max if k == "alpha_mae" else min)(d[k] for d in deviations)
        for k in measured
        if k != "foreground_fraction"
    }
    return {
        "model": name,
        "threads": threads,
        "images": len(feeds),
        "fp32": timing(per_image["fp32"]),
        precision: timing(per_image[precision]),
        "speedup_median": statistics.median(per_image["fp32"]) / statistics.median(per_image[precision]),
        "deviation_mean": {k: float(np.mean([d[k] for d in deviations])) for k in measured},
        "deviation_worst": {k: float(v) for k, v in worst.items()},
        "probe_window": (before, after),
    }


def run_precision(
    repo: Path,
    photos: list[Path],
    *,
    precision: str = "int8",
    models: tuple[str, ...] = ("u2net", "codeformer"),
    preset: str = "full",
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 3,
    out_dir: Path = Path("benchmarks/results"),
    device: str = "cpu",
) -> tuple[Path, Path]:
    """fp32 vs ``precision`` per model on the same inputs; writes the report, returns (md, json)."""
    from facecraft.runtime.instance_plan import model_filename

    started = datetime.now(timezone.utc)
    probes = ProbeLog(measure=lambda: conv_probe(device).gflops)
    probes.take("start")
    results = []
    threads = threads if device == "cpu" else (1,)
    for name in models:
        paths = {p: repo / name / "1" / model_filename(p) for p in ("fp32", precision)}
        missing = [str(path) for path in paths.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{name}: missing {', '.join(missing)} (facecraft export {name} --precision {precision})"
            )
        feeds = precision_inputs(name, preset, photos)
        for count in threads:
            results.append(_compare_precisions(name, paths, feeds, count, repeats, probes, precision, device))
    probes.take("end")
    records = {}
    for name in models:
        path = repo / name / "1" / ("export.json")
        records[name] = json.loads(path.read_text()) if path.is_file() else {}
    report = {
        "kind": "precision",
        "timestamp": started.isoformat(),
        "precision": precision,
        "device": device,
        "repo": str(repo),
        "photos": [p.name for p in photos],
        "machine": describe_machine(),
        "conv_probe_series": {**summary([s["gflops"] for s in probes.samples]), "samples": probes.samples},
        "trained": {name: records[name].get("trained") for name in models},
        "results": results,
    }
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-precision-{precision}-{preset}-{device}"
    return _write(out_dir, stem, report, render_precision(report))


def render_precision(report: dict) -> str:
    p = report["precision"]
    lines = [
        f"# Precision benchmark — fp32 vs {p}",
        "",
        f"{report['timestamp']} · photos: {', '.join(report['photos'])}",
        "",
        f"- {_probe_text(report['conv_probe_series'])}",
        "- weights: "
        + ", ".join(
            f"{m} {'trained' if t else '**UNTRAINED** (seeded random)'}" for m, t in report["trained"].items()
        ),
        "",
        f"| model | threads | images | fp32 ms/img (median) | {p} ms/img (median) | speed-up | deviation (mean) | worst |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        dev = ", ".join(f"{k} {v:.4g}" for k, v in r["deviation_mean"].items() if v is not None)
        worst = ", ".join(f"{k} {v:.4g}" for k, v in r["deviation_worst"].items() if v is not None)
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['images']} | {r['fp32']['median_ms']:.0f} | "
            f"{r[p]['median_ms']:.0f} | **{r['speedup_median']:.2f}×** | {dev} | {worst} |"
        )
    lines += [
        "",
        "fp32 and the other precision run in turns on the same inputs; the deviation compares their "
        "outputs (U²-Net: the pipeline's min-max-normalised alpha; CodeFormer: the restored uint8 crop).",
    ]
    if not all(report["trained"].values()):
        lines.append(
            "With random weights the deviation says how the quantised graph tracks fp32 arithmetic, not "
            "how a real matte or restoration changes: re-measure with official weights before choosing int8."
        )
    return "\n".join(lines) + "\n"


# --- Python steps --------------------------------------------------------------------------------


def png_before(rgba: np.ndarray) -> bytes:
    """The PNG encoder before issue #12: Pillow, zlib level 6."""
    from facecraft.pipeline.compose import encode_png

    return encode_png(rgba, compress_level=6)


def jpeg_linear(rgb: np.ndarray, max_kb: int, counter: list[int]) -> tuple[bytes, bool]:
    """The JPEG size-cap search before issue #12: walk ``JPEG_QUALITIES`` from the top."""
    from PIL import Image

    from facecraft.pipeline.compose import JPEG_QUALITIES, encode_jpeg

    image, data = Image.fromarray(rgb, "RGB"), b""
    for quality in JPEG_QUALITIES:
        counter.append(quality)
        data = encode_jpeg(image, quality)
        if len(data) <= max_kb * 1024:
            return data, True
    return data, False


def composite_before(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Compositing on the background before issue #12: the float32 formula per pixel (the table
    of ``facecraft.pipeline.compose.composite_on_background`` gives the same pixels)."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    return np.clip(np.rint(rgba[:, :, :3] * alpha + bg * (1 - alpha)), 0, 255).astype(np.uint8)


# PNG encoders measured against each other: name → HWC uint8 RGBA → bytes
def _png_candidates() -> dict[str, Callable[[np.ndarray], bytes]]:
    import cv2

    from facecraft.pipeline.compose import encode_png

    def opencv_rle(rgba: np.ndarray) -> bytes:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        return cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), params)[1].tobytes()

    return {
        "pillow_6 (before)": png_before,
        "encode_png (after)": encode_png,
        "pillow_2": lambda rgba: encode_png(rgba, compress_level=2),
        "opencv_1_rle": opencv_rle,
    }


def _count_encodes(call: Callable[[], object]) -> int:
    """JPEG encodes ``call`` makes through ``facecraft.pipeline.compose.encode_jpeg``."""
    from facecraft.pipeline import compose

    encode, count = compose.encode_jpeg, [0]

    def counting(image, quality, dpi=None):
        count[0] += 1
        return encode(image, quality, dpi)

    compose.encode_jpeg = counting
    try:
        call()
    finally:
        compose.encode_jpeg = encode
    return count[0]


def _measure_photo(path: Path, repeats: int, caps_kb: tuple[int, ...], probes: ProbeLog) -> tuple[dict, dict]:
    import cv2
    from PIL import Image

    from facecraft.pipeline import compose
    from facecraft.pipeline.decode import decode_image
    from facecraft.pipeline.detect import detect_face
    from facecraft.pipeline.options import resolve_options

    options = resolve_options()
    rgb = decode_image(path.read_bytes()).rgb
    detection = detect_face(rgb)
    # a smooth elliptical matte stands in for U²-Net's map (random weights give noise)
    seg = np.zeros((1, 320, 320), np.float32)
    cv2.ellipse(seg[0], (160, 190), (95, 150), 0, 0, 360, 1.0, -1)
    seg[0] = cv2.GaussianBlur(seg[0], (0, 0), 4)

    def compose_once():
        return compose.compose_portrait(
            rgb, seg, detection.landmarks, detection.box, options, rgb.shape[1::-1]
        )

    rgba = np.asarray(Image.open(io.BytesIO(compose_once().png)))
    flat = compose.composite_on_background(rgba, options.background)
    before = probes.last
    candidates = _png_candidates()
    png_times = alternate({name: (lambda f=f: f(rgba)) for name, f in candidates.items()}, repeats)
    png = {
        name: {
            **timing(png_times[name]),
            "bytes": len(f(rgba)),
            "same_pixels": bool(np.array_equal(np.asarray(Image.open(io.BytesIO(f(rgba)))), rgba)),
        }
        for name, f in candidates.items()
    }
    jpeg = {}
    for cap in caps_kb:
        linear_count: list[int] = []
        linear = jpeg_linear(flat, cap, linear_count)
        times = alternate(
            {
                "before": lambda c=cap: jpeg_linear(flat, c, []),
                "after": lambda c=cap: compose.encode_jpeg_capped(flat, c),
            },
            repeats,
        )
        jpeg[str(cap)] = {
            "same_bytes": linear == compose.encode_jpeg_capped(flat, cap),
            "encodes_before": len(linear_count),
            "encodes_after": _count_encodes(lambda c=cap: compose.encode_jpeg_capped(flat, c)),
            "before": timing(times["before"]),
            "after": timing(times["after"]),
        }
    blend = alternate(
        {
            "before": lambda: composite_before(rgba, options.background),
            "after": lambda: compose.composite_on_background(rgba, options.background),
        },
        repeats,
    )
    composite = {
        "before": timing(blend["before"]),
        "after": timing(blend["after"]),
        "same_pixels": bool(np.array_equal(composite_before(rgba, options.background), flat)),
    }
    whole = alternate(
        {
            "compose": compose_once,
            **{name: (lambda c=c: detect_face(rgb, c)) for name, c in DETECT_VARIANTS.items()},
        },
        repeats,
    )
    after = probes.take(f"after {path.name}")
    row = {
        "photo": path.name,
        "size": list(rgb.shape[1::-1]),
        "png": png,
        "jpeg": jpeg,
        "composite": composite,
        "compose_after": timing(whole["compose"]),
        "probe_window": (before, after),
    }
    before_ms, after_ms = (statistics.median(whole[name]) for name in DETECT_VARIANTS)
    return row, {
        "photo": path.name,
        **{name: timing(whole[name]) for name in DETECT_VARIANTS},
        "speedup_median": before_ms / after_ms,
        **same_faces(rgb),
    }


# face detection: HOG on RGB (the pipeline) against HOG on the luma (measured, not adopted: see
# facecraft.pipeline.detect.DETECTION_CHANNELS)
DETECT_VARIANTS = {"detect rgb (pipeline)": "rgb", "detect gray (candidate)": "gray"}


def same_faces(rgb: np.ndarray) -> dict:
    """Faces of both ``DETECT_VARIANTS`` on one HWC uint8 RGB image: the counts, and the worst IoU of
    a box found before with its best match after (1.0 when there is none to match)."""
    from facecraft.bench.landmarks import box_iou
    from facecraft.pipeline.detect import find_faces

    before, after = (find_faces(rgb, c) for c in DETECT_VARIANTS.values())
    worst = min((max((box_iou(a, b) for b in after), default=0.0) for a in before), default=1.0)
    return {"faces_before": len(before), "faces_after": len(after), "worst_box_iou": worst}


def detection_coverage(faces_dir: Path) -> dict:
    """:func:`same_faces` on every photo of ``faces_dir`` and the landmark error of each
    ``DETECT_VARIANTS`` on its dlib-annotated photos (``facecraft.bench.landmarks.evaluate``)."""
    from facecraft.bench.landmarks import evaluate
    from facecraft.client.batch import collect_images
    from facecraft.pipeline.decode import decode_image

    photos = [
        {"photo": path.name, **same_faces(decode_image(path.read_bytes()).rgb)}
        for path in collect_images([str(faces_dir)])
    ]
    return {
        "photos": photos,
        "landmarks": {name: evaluate(faces_dir, c) for name, c in DETECT_VARIANTS.items()},
    }


def run_steps(
    photos: list[Path],
    *,
    repeats: int = 5,
    caps_kb: tuple[int, ...] = (200, 60, 30),
    out_dir: Path,
    faces_dir: Path | None = None,
) -> tuple[Path, Path]:
    """PNG candidates, JPEG search before/after (same bytes, encode counts), compose and detect
    before/after; with ``faces_dir``, the detection's face counts on all its photos and landmark
    error on its dlib-annotated ones, before and after (:func:`detection_coverage`)."""
    started = datetime.now(timezone.utc)
    probes = ProbeLog(measure=lambda: conv_probe("cpu").gflops)
    probes.take("start")
    rows, detect_rows = [], []
    for path in photos:
        row, detect_row = _measure_photo(path, repeats, caps_kb, probes)
        rows.append(row)
        detect_rows.append(detect_row)
    coverage = detection_coverage(faces_dir) if faces_dir is not None else None
    probes.take("end")
    report = {
        "kind": "steps",
        "timestamp": started.isoformat(),
        "machine": describe_machine(),
        "conv_probe_series": {**summary([s["gflops"] for s in probes.samples]), "samples": probes.samples},
        "compose": rows,
        "detect": detect_rows,
        "detection_coverage": coverage,
    }
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-steps"
    return _write(out_dir, stem, report, render_steps(report))


def render_steps(report: dict) -> str:
    lines = [
        "# Python steps — before / after, side by side",
        "",
        f"{report['timestamp']} · 648×648 portraits (ensemble defaults) from each photo, one process, one thread",
        "",
        f"- {_probe_text(report['conv_probe_series'])}",
        "",
        "## PNG (RGBA portrait): candidates, median ms and bytes against the encoder before",
        "",
    ]
    names = list(report["compose"][0]["png"]) if report["compose"] else []
    lines += ["| photo | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in report["compose"]:
        base = r["png"][names[0]]
        cells = [
            f"{c['median_ms']:.1f} ms, {c['bytes'] / base['bytes'] - 1:+.0%}{'' if c['same_pixels'] else ' LOSSY'}"
            for c in r["png"].values()
        ]
        lines.append(f"| {r['photo']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## JPEG size cap (quality search)",
        "",
        "| photo | cap KiB | encodes before → after | linear ms | search ms | same bytes |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["compose"]:
        for cap, j in r["jpeg"].items():
            lines.append(
                f"| {r['photo']} | {cap} | {j['encodes_before']} → {j['encodes_after']} | {j['before']['median_ms']:.1f} | "
                f"{j['after']['median_ms']:.1f} | {j['same_bytes']} |"
            )
    lines += [
        "",
        "## Compositing on the background (the JPEG's input)",
        "",
        "| photo | float32 formula (before) ms | table (after) ms | ratio | same pixels |",
        "|---|---|---|---|---|",
    ]
    for r in report["compose"]:
        c = r["composite"]
        lines.append(
            f"| {r['photo']} | {c['before']['median_ms']:.1f} | {c['after']['median_ms']:.1f} | "
            f"**{c['before']['median_ms'] / c['after']['median_ms']:.2f}×** | {c['same_pixels']} |"
        )
    lines += [
        "",
        "## Whole steps (after)",
        "",
        "| photo | input | compose ms | detect rgb (pipeline) ms | detect gray (candidate) ms | ratio | "
        "faces before → after | worst box IoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    before, after = DETECT_VARIANTS
    for r, d in zip(report["compose"], report["detect"], strict=True):
        lines.append(
            f"| {r['photo']} | {r['size'][0]}×{r['size'][1]} | {r['compose_after']['median_ms']:.0f} | "
            f"{d[before]['median_ms']:.0f} | {d[after]['median_ms']:.0f} | **{d['speedup_median']:.2f}×** | "
            f"{d['faces_before']} → {d['faces_after']} | {d['worst_box_iou']:.2f} |"
        )
    coverage = report.get("detection_coverage")
    if coverage:
        lines += _render_coverage(coverage)
    return "\n".join(lines) + "\n"


def _render_coverage(coverage: dict) -> list[str]:
    photos = coverage["photos"]
    changed = [p for p in photos if p["faces_before"] != p["faces_after"]]
    lines = [
        "",
        "## Detection before / after on every shared photo",
        "",
        f"{len(photos)} photos; face count changed on {len(changed)}"
        + "".join(f"; {p['photo']} {p['faces_before']} → {p['faces_after']}" for p in changed)
        + f"; worst IoU of a face found before with its match after: "
        f"{min((p['worst_box_iou'] for p in photos), default=1.0):.2f}",
        "",
        "## Landmark error on dlib's annotated faces (NME, inter-ocular)",
        "",
        "| variant | faces matched / annotated | NME mean | median | max | detected / annotated per photo |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in coverage["landmarks"].items():
        per_photo = ", ".join(f"{p['detected']}/{p['annotated']}" for p in result["photos"])
        nme = [result[k] for k in ("nme_mean", "nme_median", "nme_max")]
        lines.append(
            f"| {name} | {result['faces_matched']} / {result['faces_annotated']} | "
            + " | ".join("n/a" if v is None else f"{v:.4f}" for v in nme)
            + f" | {per_photo} |"
        )
    lines += [
        "",
        "The reference points are dlib's own landmark model on dlib's hand-drawn boxes "
        "(facecraft.bench.landmarks): the error says what the detected box does to the landmarks.",
    ]
    return lines
