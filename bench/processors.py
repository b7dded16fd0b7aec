"""``facecraft bench --processor NAME``: one processor ensemble through Triton gRPC, images/s at
each concurrency (default 1 and 16), with the harness's conv probes, statistics and report writer.

The processor, its ensemble, its input kind and its models come from the registry
(``facecraft.processors``), so a processor added there is benchmarked without a change here as
long as this module knows its input kind (:data:`INPUT_KINDS`). Processors that detect every face
(their models include the multi-face step ``faces``) run over group photos; the others over the
harness's single-face photos. Options are the registry defaults.

Steps (:func:`run_processor_benchmark`): the benchmark model repository and instance plan of
``facecraft bench`` (ONNX exported when missing), the embedded Triton on free ports, then
:func:`measure_processor`: a warm-up request, ``requests`` requests at each concurrency with
Triton statistics and a conv probe around each, the ``c<max>/c1`` ratio with its probe spread.
Writes ``<out>/<timestamp>-processor-<name>-<preset>-<device>.{md,json}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from facecraft import processors as registry
from facecraft.bench.harness import (
    BenchConfig,
    export_records,
    instance_plan,
    log,
    measure_concurrencies,
    onnx_models,
    prepare_repository,
    select_photos,
    start_triton,
    write_report,
)
from facecraft.bench.machine import conv_probe, describe_machine, peak_rss_of_tree
from facecraft.bench.probes import DISTURBED_SPREAD, ProbeLog, ratio_spread, summary
from facecraft.bench.report import _fmt, machine_lines, weights_label
from facecraft.client.options import PortraitOptions

REPORT_VERSION = 1
# Small group photos of the shared set (2-3 annotated faces each, 360-500 px; ../shared/data/faces/
# SOURCES.md): every face of an image is processed, so a face processor is measured on several.
GROUP_PHOTOS = (
    "dlib__2008_001322.jpg",
    "dlib__2008_002506.jpg",
    "dlib__2008_001009.jpg",
    "dlib__2009_004587.jpg",
)
DEFAULT_CONCURRENCY = (1, 16)


@dataclass(frozen=True)
class InputKind:
    """How the bench feeds processors of one registry ``input_kind``.

    ``samples(photos)``: the (label, request input) pairs the load generator cycles over, from
    (name, encoded image bytes) photos; ``send(client, processor, sample)``: one request with the
    asyncio Triton client (``AsyncPortraitClient``). A two-input processor (e.g. a face swapper:
    source + target) gets an entry that pairs photos and passes both images.
    """

    samples: Callable[[list[tuple[str, bytes]]], list[tuple[str, object]]]
    send: Callable[[object, str, object], Awaitable[object]]


INPUT_KINDS: dict[str, InputKind] = {
    "image": InputKind(
        samples=lambda photos: list(photos),
        send=lambda client, name, image: client.run_processor(name, image),
    ),
    # face_swapper: each photo's face into the next photo (the last into the first)
    "source + target images": InputKind(
        samples=lambda photos: [
            (f"{source[0]}->{target[0]}", {"SOURCE": source[1], "TARGET": target[1]})
            for source, target in zip(photos, photos[1:] + photos[:1], strict=True)
        ],
        send=lambda client, name, pair: client.run_processor(name, pair),
    ),
}


# ``portrait`` answers with the portrait outputs (PNG, JPEG, FACE_BOX, ...), not ``OUTPUT``: it is
# sent as ``facecraft bench`` sends it (``process_with``, the default ``PortraitOptions``: enhanced).
PORTRAIT = InputKind(
    samples=lambda photos: list(photos),
    send=lambda client, _name, image: client.process_with(image, PortraitOptions()),
)


def input_kind(processor: registry.Processor) -> InputKind:
    """The :class:`InputKind` of ``processor`` (:data:`PORTRAIT` for the portrait processor);
    ``ValueError`` naming the kinds the bench knows."""
    if processor.name == "portrait":
        return PORTRAIT
    try:
        return INPUT_KINDS[processor.input_kind]
    except KeyError:
        raise ValueError(
            f"processor {processor.name} takes input {processor.input_kind!r}; the processor bench "
            f"feeds {', '.join(INPUT_KINDS)} (add an InputKind in facecraft.bench.processors)"
        ) from None


def photo_names(processor: registry.Processor) -> tuple[str, ...] | None:
    """The shared photos for ``processor``: :data:`GROUP_PHOTOS` when it handles every face (its
    models include ``faces``), else None (the harness default, single frontal faces)."""
    return GROUP_PHOTOS if "faces" in processor.models else None


def processor_photos(config: BenchConfig, processor: registry.Processor) -> list[tuple[str, bytes]]:
    """(name, bytes) photos of ``processor``'s bench: ``config.photos_dir`` or the shared set,
    each scaled down to ``config.photo_max_side`` px on its longer side when that is set."""
    names = photo_names(processor)
    photos = (
        select_photos(config.photos_dir) if names is None else select_photos(config.photos_dir, names=names)
    )
    if config.photo_max_side:
        photos = [(name, fit_photo(data, config.photo_max_side)) for name, data in photos]
    return photos


def fit_photo(data: bytes, max_side: int) -> bytes:
    """Encoded photo ``data`` scaled down (area filter, aspect kept) so that its longer side is at
    most ``max_side`` px, re-encoded as JPEG quality 95; unchanged when it already fits. Raises
    ``ValueError`` for ``max_side < 1`` and PIL's ``UnidentifiedImageError`` for data that is no image."""
    import io

    from PIL import Image

    if max_side < 1:
        raise ValueError(f"max_side must be positive, not {max_side}")
    image = Image.open(io.BytesIO(data))
    if max(image.size) <= max_side:
        return data
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    buffer = io.BytesIO()
    image.convert("RGB").resize(size, Image.Resampling.BOX).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def triton_models(processor: registry.Processor) -> tuple[str, ...]:
    """The Triton models a bench of ``processor`` loads: its ensembles and every model they need
    (registry ``ensembles`` + ``models``), nothing else of the repository."""
    return tuple(dict.fromkeys((*processor.ensembles, *processor.models)))


def measure_processor(
    config: BenchConfig,
    name: str,
    *,
    grpc_url: str,
    stats_url: str,
    records: dict[str, dict],
    plan,
) -> dict:
    """Benchmark processor ``name`` on the running Triton at ``grpc_url`` (statistics from
    ``stats_url``, host:port of its HTTP endpoint); returns the report dict.

    ``records``: ``export.json`` by ONNX model (``export_records``); ``plan``: the Triton
    instance plan it runs with (for the report). Raises ``KeyError`` for an unknown processor,
    ``ValueError`` for an input kind the bench cannot feed, and the client's ``FacecraftError``
    when the warm-up request fails (a benchmark of error answers would measure nothing).
    """
    from facecraft.client.async_portrait_client import AsyncPortraitClient

    processor = registry.get(name)
    kind = input_kind(processor)
    started_at = datetime.now(timezone.utc)
    concurrency = list(config.concurrency)
    log(f"processor {name} ({processor.ensembles[0]}), preset {config.preset}, device {config.device}, "
        f"concurrency {concurrency}, {config.requests} requests each")  # fmt: skip
    machine = describe_machine()
    first_probe = conv_probe(config.device)
    probes = ProbeLog(measure=lambda: conv_probe(config.device).gflops)
    probes.take("start", first_probe.gflops)
    log(f"probe: {first_probe.gflops:.1f} GFLOP/s ({first_probe.provider})")
    photos = processor_photos(config, processor)
    samples = kind.samples(photos)
    results: list[dict] = []

    async def scenarios() -> None:
        async with AsyncPortraitClient(grpc_url, "grpc", timeout_s=3600) as client:
            await kind.send(client, name, samples[0][1])  # warm-up
            await measure_concurrencies(
                "triton_grpc",
                lambda sample, _label: kind.send(client, name, sample),
                samples=samples,
                requests=config.requests,
                concurrency=concurrency,
                stats_url=stats_url,
                results=results,
                probes=probes,
                fields={"processor": name},
            )

    asyncio.run(scenarios())
    log(f"probe again: {probes.samples[probes.take('end')]['gflops']:.1f} GFLOP/s")
    return build_processor_report(
        config=config,
        processor=processor,
        started_at=started_at,
        machine=machine,
        probe=replace(first_probe, gflops=max(s["gflops"] for s in probes.samples)),
        probe_samples=probes.samples,
        records=records,
        photos=[label for label, _ in samples],
        scenarios=results,
        plan=plan,
    )


def _models_and_notes(config, processor, records) -> tuple[dict, list[str]]:
    """The report's ``models`` (weights and precision of ``processor``'s ONNX models, from
    ``export.json`` ``records``) and its standard notes (options, untrained weights, CPU)."""
    models = {
        model: {
            "trained": record.get("trained"),
            "weights_source": record.get("weights_source"),
            "preset": record.get("preset"),
            "precision": record.get("precision"),
        }
        for model, record in records.items()
        if model in processor.models
    }
    notes = [f"options: the registry defaults ({', '.join(o.name for o in processor.options) or 'none'})"]
    untrained = [model for model, m in models.items() if m["trained"] is not True]
    if untrained:
        notes.append(
            f"UNTRAINED weights (seeded random) for: {', '.join(untrained)} — timings are valid, outputs are not real"
        )
    if config.device == "cpu":
        notes.append("CPU only: relative numbers on this machine; absolute times only from a GPU run")
    return models, notes


def build_processor_report(
    *, config, processor, started_at, machine, probe, probe_samples, records, photos, scenarios, plan
) -> dict:
    """The processor report as a JSON-serialisable dict (fields: docs/benchmarks.md)."""
    by_concurrency = {s["concurrency"]: s for s in scenarios}
    low, high = min(by_concurrency), max(by_concurrency)
    ratio = spread = None
    if high != low and by_concurrency[low]["images_per_s"]:
        ratio = by_concurrency[high]["images_per_s"] / by_concurrency[low]["images_per_s"]
        spread = ratio_spread(probe_samples, by_concurrency[high], by_concurrency[low])
    models, notes = _models_and_notes(config, processor, records)
    if config.photo_max_side:
        notes.append(f"photos scaled down to at most {config.photo_max_side} px on their longer side "
                     "(area filter, JPEG quality 95) before the run")  # fmt: skip
    return {
        "report_version": REPORT_VERSION,
        "kind": "processor",
        "processor": processor.name,
        "ensemble": processor.ensembles[0],
        "input_kind": processor.input_kind,
        "triton_models": list(processor.models),
        "timestamp": started_at.isoformat(),
        "preset": config.preset,
        "device": config.device,
        "requests_per_scenario": config.requests,
        "concurrency": [s["concurrency"] for s in scenarios],
        "machine": machine,
        **plan_and_probes(plan, probe, probe_samples),
        "models": models,
        "photos": photos,
        "photo_max_side": config.photo_max_side,
        "scenarios": scenarios,
        "images_per_s": {f"c{s['concurrency']}": s["images_per_s"] for s in scenarios},
        "ratio": {
            "name": f"c{high}_over_c{low}",
            "value": ratio,
            "probe_spread": spread,
            "disturbed": spread is not None and spread > DISTURBED_SPREAD,
        },
        "notes": notes,
    }


def _model_lines(report: dict) -> list[str]:
    """The Markdown "Models" section of a processor report (preset, precision, weights)."""
    lines = ["## Models", "", "| model | preset | precision | weights |", "|---|---|---|---|"]
    for name, model in report["models"].items():
        lines.append(
            f"| {name} | {model['preset']} | {model['precision']} | {weights_label(model['trained'])} |"
        )
    return lines


def render_processor_markdown(report: dict) -> str:
    """A Markdown version of a processor report (same numbers as the JSON)."""
    ratio = report["ratio"]
    flag = " — **DISTURBED**: the machine's conv throughput moved" if ratio["disturbed"] else ""
    spread = f" (probe spread {ratio['probe_spread']:.0%}{flag})" if ratio["probe_spread"] is not None else ""
    lines = [
        f"# Facecraft processor benchmark — `{report['processor']}`, preset `{report['preset']}`, "
        f"device `{report['device']}`",
        "",
        f"{report['timestamp']} · ensemble `{report['ensemble']}` over Triton gRPC · input "
        f"{report['input_kind']} · {report['requests_per_scenario']} requests per concurrency",
        "",
        f"Photos: {', '.join(report['photos'])}"
        + (f" (scaled to ≤ {report['photo_max_side']} px)" if report.get("photo_max_side") else ""),
        "",
        *machine_lines(report),
        "",
        *_model_lines(report),
    ]
    lines += [
        "",
        "## Images/s over Triton gRPC",
        "",
        "| concurrency (effective) | ok / requests | images/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        latency = s["latency_ms"]
        lines.append(
            f"| {s['concurrency']} ({s['effective_concurrency']}) | {s['ok']} / {s['requests']} | "
            f"{s['images_per_s']:.3f} | {_fmt(latency.get('p50'), 0)} | {_fmt(latency.get('p95'), 0)} | "
            f"{_fmt(latency.get('p99'), 0)} |"
        )
    lines += ["", f"- {ratio['name']}: {_fmt(ratio['value'])}{spread}"]
    for s in report["scenarios"]:
        if s["errors"]:
            lines.append(f"- errors at c{s['concurrency']}: {'; '.join(s['errors'])}")
    lines += ["", "## Notes", "", *(f"- {note}" for note in report["notes"]), ""]
    return "\n".join(lines)


def run_processor_benchmark(config: BenchConfig, name: str):
    """Prepare the benchmark repository, start Triton, :func:`measure_processor`, write the report;
    returns (markdown path, JSON path)."""
    processor = registry.get(name)
    input_kind(processor)  # refuse an input kind the bench cannot feed before exporting anything
    plan = instance_plan(config)
    log(f"Triton instance plan: {plan.describe()}")
    models = onnx_models(processor)
    repo = prepare_repository(config, plan, models)
    server = start_triton(repo, repo.parent / "runtime", triton_models(processor))
    try:
        report = measure_processor(
            config, name, grpc_url=server.grpc_url, stats_url=server.http_url,
            records=export_records(repo, models), plan=plan,
        )  # fmt: skip
    finally:
        server.stop()
    started_at = datetime.fromisoformat(report["timestamp"])
    return write_report(
        config.out_dir, started_at, f"processor-{name}-{config.preset}-{config.device}", report,
        render_processor_markdown(report),
    )  # fmt: skip


# --- ``facecraft bench --processor NAME --video``: streaming video pipeline vs. a sequential loop ---

VIDEO_REPORT_VERSION = 1
VIDEO_CLIP_SECONDS = (5.0, 30.0)
VIDEO_SIZE = (160, 120)  # width, height: small, so that a 30 s clip fits a few minutes
VIDEO_FPS = 10
VIDEO_MAX_IN_FLIGHT = 8  # the CLI's default (``facecraft process --concurrency``)
VIDEO_TARGET = 1.1  # issue #16: streaming ≥ 1.1× the sequential loop
# A single frontal face (../shared/data/faces/SOURCES.md), large in the frame so the detector finds it.
VIDEO_FACE_PHOTO = "fr__obama_small.jpg"
# The identity a processor with one (face_swapper) gets on every frame: another frontal face.
VIDEO_IDENTITY_PHOTO = "cf__Hepburn01.png"
_AUDIO_RATE = 44100


def video_processor(name: str) -> registry.Processor:
    """The registry processor ``name`` when it runs per frame; ``KeyError`` for an unknown name,
    ``ValueError`` for one that works on images only (``portrait``)."""
    processor = registry.get(name)
    if not processor.per_frame:
        raise ValueError(f"{name} works on one image at a time only; --video takes a per-frame processor")
    return processor


def write_bench_clip(
    path, seconds: float, *, fps: int = VIDEO_FPS, size: tuple[int, int] = VIDEO_SIZE, photos_dir=None
) -> dict:
    """Write an H.264 MP4 (yuv420p, AAC 440 Hz sine tone) of ``seconds`` s at ``fps`` to ``path``:
    a face photo of the shared set (``photos_dir`` or ../shared/data/faces, :data:`VIDEO_FACE_PHOTO`;
    the harness's first photo when it is absent), 3/4 of the frame high, sliding over a moving
    gradient so that every frame differs. Frames are made one at a time (memory does not grow with
    ``seconds``). Returns ``{"seconds", "frames", "fps", "width", "height"}``."""
    import av
    import cv2
    import numpy as np

    width, height = size
    photos = dict(select_photos(photos_dir))
    data = photos.get(VIDEO_FACE_PHOTO) or next(iter(photos.values()))
    face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    face_h = int(height * 0.75)
    face = cv2.resize(face, (max(2, round(face.shape[1] * face_h / face.shape[0])), face_h))
    face = face[:, :width]
    frames = int(round(seconds * fps))
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=_AUDIO_RATE)
        audio.layout = "mono"
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[..., 0] = (xs * 2 + index * 5) % 256
            image[..., 1] = (ys * 2) % 256
            image[..., 2] = 128
            left = (index * 2) % max(1, width - face.shape[1] + 1)
            top = (height - face_h) // 2
            image[top : top + face_h, left : left + face.shape[1]] = face
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        total = int(round(seconds * _AUDIO_RATE))
        for start in range(0, total, 1024):
            t = np.arange(start, min(total, start + 1024)) / _AUDIO_RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = _AUDIO_RATE, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return {"seconds": seconds, "frames": frames, "fps": fps, "width": width, "height": height}


async def _sequential_video(frame_function, source, destination) -> dict:
    """The baseline: decode a frame, ``await frame_function(rgb)``, encode it, then the next frame —
    one frame at a time, no threads, no frames in flight (H.264 MP4 out, audio not copied)."""
    import av

    frames = 0
    with av.open(str(source)) as reader, av.open(str(destination), "w", format="mp4") as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream("libx264", rate=stream.average_rate)
        out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
        for frame in reader.decode(stream):
            result = await frame_function(frame.to_ndarray(format="rgb24"))
            image = av.VideoFrame.from_ndarray(result[..., :3], format="rgb24")
            image.pts = frames
            writer.mux(out.encode(image))
            frames += 1
        writer.mux(out.encode(None))
    return {"frames": frames, "max_frames_in_flight": 1}


def video_run(
    mode: str,
    processor: str,
    grpc_url: str,
    source: str,
    destination: str,
    max_in_flight: int,
    identity_photo: str | None = None,
) -> dict:
    """One timed run over the video at ``source`` (call it in a fresh process: its peak RSS is the
    run's). ``mode``: ``"streaming"`` (``client.video.process_video_file``: the pipeline of
    ``facecraft process clip.mp4``, ``max_in_flight`` frames in flight) or ``"sequential"``
    (:func:`_sequential_video`); both send each frame as PNG to ``processor``'s ensemble over
    Triton gRPC (``client.video.processor_frame_function``). One warm-up frame opens the channel
    before the clock starts. Returns ``{"mode", "frames", "frames_without_face" (passed through
    unprocessed), "wall_s", "frames_per_s",
    "baseline_rss_mib", "peak_rss_mib", "max_frames_in_flight"}``; RSS high-water mark in MiB
    (``VmHWM`` of /proc/self/status, else ``getrusage`` ``ru_maxrss``) after the warm-up and
    after the run. A processor with an identity (face_swapper) gets the one of ``identity_photo``,
    computed once before the warm-up (``client.identity``) and sent with every frame, as
    ``facecraft process --source`` does.
    Raises ``ValueError`` for an unknown mode and what the client or the pipeline raises."""
    import resource
    import time

    import numpy as np

    from facecraft.client.async_portrait_client import AsyncPortraitClient
    from facecraft.client.errors import NoFaceDetected
    from facecraft.client.video import process_video_file, processor_frame_function

    if mode not in ("streaming", "sequential"):
        raise ValueError(f"mode must be streaming or sequential, not {mode!r}")

    def rss_mib() -> float:
        # VmHWM: this process image's own peak. getrusage's ru_maxrss is not: Linux carries the
        # forking parent's high-water mark over fork + exec (a spawned child reports the bench's).
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    async def run() -> dict:
        async with AsyncPortraitClient(grpc_url, "grpc", timeout_s=3600) as client:
            no_face = [0]
            extra = {}
            if registry.get(processor).identity is not None:
                if not identity_photo:
                    raise ValueError(f"{processor} needs an identity photo")
                with open(identity_photo, "rb") as photo:
                    extra = {"SOURCE_EMBEDDING": await client.identity(processor, photo.read())}

            async def call(data: bytes):
                try:
                    return await client.run_processor(processor, {**extra, "TARGET": data} if extra else data)
                except NoFaceDetected:
                    no_face[0] += 1
                    raise

            frame_function = processor_frame_function(call, processor)
            await frame_function(np.zeros((64, 64, 3), np.uint8))  # warm-up (no face: passed through)
            no_face[0] = 0
            baseline = rss_mib()
            start = time.perf_counter()
            if mode == "streaming":
                result = await process_video_file(
                    call, processor, source, destination, max_in_flight=max_in_flight
                )
                done = {"frames": result.frames, "max_frames_in_flight": result.max_frames_in_flight}
            else:
                done = await _sequential_video(frame_function, source, destination)
            wall = time.perf_counter() - start
        return {
            "mode": mode,
            **done,
            "frames_without_face": no_face[0],
            "wall_s": wall,
            "frames_per_s": done["frames"] / wall,
            "baseline_rss_mib": baseline,
            "peak_rss_mib": rss_mib(),
        }

    return asyncio.run(run())


def _in_fresh_process(function, *args):
    """``function(*args)`` in a new spawned Python process (its own RSS high-water mark)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def measure_video(
    config: BenchConfig,
    name: str,
    *,
    grpc_url: str,
    records: dict[str, dict],
    plan,
    work_dir,
    clip_seconds: tuple[float, float] = VIDEO_CLIP_SECONDS,
    repeats: int = 2,
    max_in_flight: int = VIDEO_MAX_IN_FLIGHT,
    fps: int = VIDEO_FPS,
    size: tuple[int, int] = VIDEO_SIZE,
    triton_pid: int | None = None,
) -> dict:
    """Video benchmark of processor ``name`` on the running Triton at ``grpc_url``; returns the
    report dict (fields: docs/benchmarks.md).

    Writes a short and a long clip (``clip_seconds``, :func:`write_bench_clip`) into ``work_dir``;
    on the short one, ``repeats`` alternating pairs of a sequential and a streaming run; on the
    long one, one streaming run; each run in a fresh process (:func:`video_run`) with a conv probe
    after it. Clips: ``fps`` frames/s, ``size`` (width, height). frames/s ratio = median streaming
    / median sequential on the short clip, with the probe spread over those runs; peak RSS of the
    streaming runs of both clips; with ``triton_pid`` (the server's process) also the Triton
    process tree's memory after every run (``triton_rss_mib``: sums over the server and its
    backend stubs of VmRSS, ``current``, and of VmHWM, ``peak``). Raises
    ``KeyError`` for an unknown processor, ``ValueError`` for one that works on images only.
    """
    from pathlib import Path

    processor = video_processor(name)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    identity_photo = None
    if processor.identity is not None:  # face_swapper: the identity of one photo on every frame
        photos = dict(select_photos(config.photos_dir, names=(VIDEO_IDENTITY_PHOTO,)))
        identity_photo = str(work_dir / "identity-photo")
        Path(identity_photo).write_bytes(photos.get(VIDEO_IDENTITY_PHOTO) or next(iter(photos.values())))
    started_at = datetime.now(timezone.utc)
    log(f"video: processor {name}, preset {config.preset}, clips {clip_seconds} s at {fps} fps, "
        f"{size[0]}x{size[1]}, {repeats} repeats, {max_in_flight} frames in flight")  # fmt: skip
    machine = describe_machine()
    first_probe = conv_probe(config.device)
    probes = ProbeLog(measure=lambda: conv_probe(config.device).gflops)
    probes.take("start", first_probe.gflops)
    clips = {}
    for seconds in clip_seconds:
        label = f"{seconds:g}s"
        path = work_dir / f"clip-{label}.mp4"
        clips[label] = {**write_bench_clip(path, seconds, fps=fps, size=size, photos_dir=config.photos_dir),
                        "path": str(path)}  # fmt: skip
    short, long = (f"{s:g}s" for s in clip_seconds)
    plan_runs = [(mode, short) for _ in range(repeats) for mode in ("sequential", "streaming")]
    plan_runs.append(("streaming", long))
    runs = []
    for index, (mode, clip) in enumerate(plan_runs):
        first = probes.last
        out = work_dir / f"out-{index}-{mode}-{clip}.mp4"
        run = _in_fresh_process(video_run, mode, name, grpc_url, clips[clip]["path"], str(out), max_in_flight,
                                identity_photo)  # fmt: skip
        out.unlink(missing_ok=True)
        last = probes.take(f"after {mode} {clip} #{index}")
        runs.append({**run, "clip": clip, "max_in_flight": max_in_flight if mode == "streaming" else 1,
                     "probe_window": [first, last]})  # fmt: skip
        if triton_pid:
            runs[-1]["triton_rss_mib"] = {
                "current": round(sum(peak_rss_of_tree(triton_pid, "VmRSS").values()), 1),
                "peak": round(sum(peak_rss_of_tree(triton_pid).values()), 1),
            }
        log(f"{mode:<10} {clip:>4}: {run['frames']} frames, {run['frames_per_s']:.3g} frames/s, "
            f"peak RSS {run['peak_rss_mib']:.0f} MiB"
            + (f", Triton tree {runs[-1]['triton_rss_mib']['current']:.0f} MiB" if triton_pid else ""))  # fmt: skip
    return build_video_report(
        config=config, processor=processor, started_at=started_at, machine=machine,
        probe=replace(first_probe, gflops=max(s["gflops"] for s in probes.samples)),
        probe_samples=probes.samples, records=records, clips=clips, runs=runs, plan=plan,
        short=short, long=long,
    )  # fmt: skip


def plan_and_probes(plan, probe, probe_samples) -> dict:
    """The report fields every processor report shares (image and video): the instance plan, the
    first conv probe and the probe series with its disturbed threshold."""
    return {
        "instance_plan": {**asdict(plan), "description": plan.describe()},
        "conv_probe": asdict(probe),
        "conv_probe_series": {
            **summary([s["gflops"] for s in probe_samples]),
            "threshold": DISTURBED_SPREAD,
            "samples": list(probe_samples),
        },
    }


def build_video_report(
    *, config, processor, started_at, machine, probe, probe_samples, records, clips, runs, plan, short, long
) -> dict:
    """The video report as a JSON-serialisable dict (fields: docs/benchmarks.md)."""
    from statistics import median

    def on(mode, clip):
        return [r for r in runs if r["mode"] == mode and r["clip"] == clip]

    sequential, streaming = on("sequential", short), on("streaming", short)
    fps = {
        "sequential": median(r["frames_per_s"] for r in sequential),
        "streaming": median(r["frames_per_s"] for r in streaming),
    }
    ratio = fps["streaming"] / fps["sequential"] if fps["sequential"] else None
    windows = sequential + streaming
    spread = ratio_spread(probe_samples, *windows)
    rss = {clip: max(r["peak_rss_mib"] for r in on("streaming", clip)) for clip in (short, long)}
    triton = None
    if all("triton_rss_mib" in r for r in runs):
        # the Triton tree after the last short-clip run and after the long-clip run
        after_short = [r for r in runs if r["clip"] == short][-1]["triton_rss_mib"]
        after_long = on("streaming", long)[-1]["triton_rss_mib"]
        triton = {
            "after_short": after_short,
            "after_long": after_long,
            "growth_mib": {key: round(after_long[key] - after_short[key], 1) for key in ("current", "peak")},
        }
    models, notes = _models_and_notes(config, processor, records)
    notes.append(
        f"each run in a fresh process; peak RSS = its own high-water mark (VmHWM; imports, client "
        f"and pipeline included); {len(sequential)} sequential and {len(streaming)} streaming runs on the "
        f"{short} clip (median frames/s), one streaming run on the {long} clip"
    )
    return {
        "report_version": VIDEO_REPORT_VERSION,
        "kind": "processor_video",
        "processor": processor.name,
        "ensemble": processor.ensembles[0],
        "triton_models": list(processor.models),
        "timestamp": started_at.isoformat(),
        "preset": config.preset,
        "device": config.device,
        "machine": machine,
        **plan_and_probes(plan, probe, probe_samples),
        "models": models,
        "clips": {label: {k: v for k, v in clip.items() if k != "path"} for label, clip in clips.items()},
        "runs": runs,
        "frames_per_s": {**fps, "clip": short},
        "ratio": {
            "name": "streaming_over_sequential",
            "value": ratio,
            "probe_spread": spread,
            "disturbed": spread is not None and spread > DISTURBED_SPREAD,
            "target": VIDEO_TARGET,
            "target_reached": ratio is not None and ratio >= VIDEO_TARGET,
        },
        "peak_rss_mib": {
            "streaming": rss,
            "short": short,
            "long": long,
            "growth_mib": rss[long] - rss[short],
            "growth_ratio": rss[long] / rss[short],
            "triton": triton,
        },
        "notes": notes,
    }


def render_video_markdown(report: dict) -> str:
    """A Markdown version of a video report (same numbers as the JSON)."""
    ratio, rss, fps = report["ratio"], report["peak_rss_mib"], report["frames_per_s"]
    flag = " — **DISTURBED**: the machine's conv throughput moved" if ratio["disturbed"] else ""
    spread = f" (probe spread {ratio['probe_spread']:.0%}{flag})" if ratio["probe_spread"] is not None else ""
    reached = "reached" if ratio["target_reached"] else "**not reached**"
    lines = [
        f"# Facecraft video benchmark — `{report['processor']}`, preset `{report['preset']}`, "
        f"device `{report['device']}`",
        "",
        f"{report['timestamp']} · ensemble `{report['ensemble']}` over Triton gRPC · streaming pipeline "
        f"(`facecraft process clip.mp4`) vs. a sequential per-frame loop",
        "",
        "Clips: "
        + ", ".join(
            f"{label}: {c['frames']} frames, {c['width']}×{c['height']} at {c['fps']} fps, sine-tone audio"
            for label, c in report["clips"].items()
        ),
        "",
        *machine_lines(report),
        "",
        *_model_lines(report),
    ]
    lines += [
        "",
        "## Runs (each in a fresh process)",
        "",
        "| mode | clip | frames in flight (max used) | frames (no face) | s | frames/s | RSS after warm-up MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['mode']} | {r['clip']} | {r['max_in_flight']} ({r['max_frames_in_flight']}) | {r['frames']} ({r['frames_without_face']}) | "
            f"{r['wall_s']:.1f} | {r['frames_per_s']:.3g} | {r['baseline_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"- frames/s on the {fps['clip']} clip (median): streaming {fps['streaming']:.3g}, "
        f"sequential {fps['sequential']:.3g}",
        f"- {ratio['name']}: {_fmt(ratio['value'])}{spread}; target ≥ {ratio['target']}× {reached}",
        f"- peak RSS of the streaming run: {rss['short']} {rss['streaming'][rss['short']]:.0f} MiB, "
        f"{rss['long']} {rss['streaming'][rss['long']]:.0f} MiB (growth {rss['growth_mib']:+.0f} MiB, "
        f"×{rss['growth_ratio']:.2f})",
    ]
    if rss.get("triton"):
        triton = rss["triton"]
        lines.append(
            f"- Triton process tree (server + backend stubs, summed): resident "
            f"{triton['after_short']['current']:.0f} MiB after the {rss['short']} runs, "
            f"{triton['after_long']['current']:.0f} MiB after the {rss['long']} run "
            f"({triton['growth_mib']['current']:+.0f} MiB); high-water marks {triton['after_short']['peak']:.0f} → "
            f"{triton['after_long']['peak']:.0f} MiB ({triton['growth_mib']['peak']:+.0f} MiB)"
        )
    lines += [
        "",
        "## Notes",
        "",
        *(f"- {note}" for note in report["notes"]),
        "",
    ]
    return "\n".join(lines)


def run_video_benchmark(
    config: BenchConfig,
    name: str,
    clip_seconds=VIDEO_CLIP_SECONDS,
    repeats: int = 2,
    fps: int = VIDEO_FPS,
    size: tuple[int, int] = VIDEO_SIZE,
):
    """Prepare the benchmark repository, start Triton, :func:`measure_video` (clips of
    ``clip_seconds`` at ``fps``, ``size`` = (width, height)), write the report
    ``<out>/<timestamp>-processor-video-<name>-<preset>-<device>.{md,json}``; returns (md, JSON)
    paths. ``ValueError`` for a processor that works on images only (before anything is exported)."""
    import tempfile
    from pathlib import Path

    processor = video_processor(name)  # refuse an image-only processor before exporting anything
    plan = instance_plan(config)
    log(f"Triton instance plan: {plan.describe()}")
    models = onnx_models(processor)
    repo = prepare_repository(config, plan, models)
    server = start_triton(repo, repo.parent / "runtime", triton_models(processor))
    try:
        with tempfile.TemporaryDirectory(prefix="facecraft-bench-video-") as work_dir:
            report = measure_video(
                config, name, grpc_url=server.grpc_url, records=export_records(repo, models), plan=plan,
                work_dir=Path(work_dir), clip_seconds=clip_seconds, repeats=repeats, fps=fps, size=size,
                triton_pid=server.pid,
            )  # fmt: skip
    finally:
        server.stop()
    started_at = datetime.fromisoformat(report["timestamp"])
    return write_report(
        config.out_dir, started_at, f"processor-video-{name}-{config.preset}-{config.device}", report,
        render_video_markdown(report),
    )  # fmt: skip
