"""``facecraft bench`` and ``facecraft perf-data`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    _register_perf_data(subparsers)
    _register_bench(subparsers)
    _register_micro(subparsers)


# --- bench-steps / bench-precision -------------------------------------------------------------


def _photo_paths(folder: Path | None) -> list[Path]:
    from facecraft.bench.harness import DEFAULT_PHOTOS, SHARED_FACES
    from facecraft.client.batch import collect_images

    if folder is not None:
        return collect_images([str(folder)])
    return [SHARED_FACES / name for name in DEFAULT_PHOTOS if (SHARED_FACES / name).is_file()]


def _register_micro(subparsers) -> None:
    steps = subparsers.add_parser(
        "bench-steps",
        help="micro-benchmark: the portrait's Python steps before/after (PNG, JPEG search, compose, detect)",
        description="Time PNG encoding and the JPEG size-cap search before and after issue #12 side by "
        "side (alternating), the whole compose step and face detection, with conv probes; writes a report.",
    )
    steps.add_argument("--photos", type=Path, help="folder of photos (default: the benchmark's six)")
    steps.add_argument("--repeats", type=int, default=5)
    steps.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    steps.set_defaults(func=run_steps_command)
    precision = subparsers.add_parser(
        "bench-precision",
        help="micro-benchmark: each ONNX model at fp32 vs int8/fp16 (speed-up, output deviation)",
        description="Run model.onnx and model.<precision>.onnx of each model in turns on the same inputs "
        "(the benchmark photos through the pipeline's pre-processing): per-image time, speed-up, and the "
        "deviation from fp32 (U2-Net alpha MAE / IoU at 0.5, CodeFormer PSNR / SSIM); writes a report.",
    )
    precision.add_argument("--repo", type=Path, required=True, help="model repository with both exports")
    precision.add_argument("--precision", choices=("int8", "fp16"), default="int8")
    precision.add_argument("--models", default="u2net,codeformer", help="comma-separated")
    precision.add_argument("--preset", choices=("tiny", "full"), default="full")
    precision.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="gpu: CUDA execution provider"
    )
    precision.add_argument("--threads", default="1,2", help="onnxruntime intra-op threads to try, e.g. 1,2")
    precision.add_argument("--photos", type=Path, help="folder of photos (default: the benchmark's six)")
    precision.add_argument("--repeats", type=int, default=3)
    precision.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    precision.set_defaults(func=run_precision_command)


def run_steps_command(args: argparse.Namespace) -> int:
    from facecraft.bench.micro import run_steps
    from facecraft.cli import CliError

    photos = _photo_paths(args.photos)
    if not photos:
        raise CliError("no photos found")
    from facecraft.bench.harness import SHARED_FACES

    faces_dir = args.photos or (SHARED_FACES if SHARED_FACES.is_dir() else None)
    md_path, json_path = run_steps(photos, repeats=args.repeats, out_dir=args.out, faces_dir=faces_dir)
    print(f"report: {md_path}\n        {json_path}")
    return 0


def run_precision_command(args: argparse.Namespace) -> int:
    from facecraft.bench.micro import run_precision
    from facecraft.cli import CliError

    photos = _photo_paths(args.photos)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    except ValueError as error:
        raise CliError(f"--threads: {error}") from error
    try:
        md_path, json_path = run_precision(
            args.repo, photos, precision=args.precision, models=models, preset=args.preset,
            threads=threads, repeats=args.repeats, out_dir=args.out, device=args.device,
        )  # fmt: skip
    except FileNotFoundError as error:
        raise CliError(str(error)) from error
    print(f"report: {md_path}\n        {json_path}")
    return 0


# --- perf-data ---------------------------------------------------------------------------------


def _register_perf_data(subparsers) -> None:
    parser = subparsers.add_parser(
        "perf-data",
        help="write perf_analyzer --input-data JSON from a folder of photos",
        description="Write perf_analyzer --input-data JSON (IMAGE as a length-prefixed BYTES tensor, shape [1]).",
    )
    parser.add_argument("photos", nargs="+", metavar="PHOTO_DIR", help="folders or image files")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="data.json")
    parser.add_argument("--limit", type=int, default=None, help="use at most N photos")
    parser.set_defaults(func=run_perf_data)


def run_perf_data(args: argparse.Namespace) -> int:
    from facecraft.bench.perf_data import write_perf_input_data
    from facecraft.cli import CliError
    from facecraft.client.batch import collect_images

    try:
        images = collect_images(args.photos)
    except (FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from error
    if args.limit is not None:
        images = images[: args.limit]
    if not images:
        raise CliError("no image files found in the given paths")
    count = write_perf_input_data(images, args.out)
    print(f"wrote {count} IMAGE entries to {args.out}")
    print(f"use: perf_analyzer -m portrait -i grpc -u 127.0.0.1:8001 --input-data {args.out}")
    return 0


# --- bench -------------------------------------------------------------------------------------


def _concurrency_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrency values must be positive integers")
    return values


def _register_bench(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark: sequential onnxruntime pipeline vs Triton gRPC vs gateway; writes a report",
        description="Benchmark the in-process sequential pipeline, the Triton ensemble over gRPC and the "
        "gateway over HTTP side by side, with Triton statistics, peak RSS and a roofline.",
    )
    parser.add_argument("--preset", choices=("tiny", "full"), default="full")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests, concurrency 1 and 2")
    parser.add_argument(
        "--photos", type=Path, help="folder of photos (default: shared faces, else the astronaut)"
    )
    parser.add_argument("--concurrency", type=_concurrency_list, default=None, metavar="1,4,16")
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per scenario (default 16, quick 3)"
    )
    parser.add_argument(
        "--enhanced-requests",
        type=int,
        default=None,
        help="requests per enhanced scenario (default: --requests)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="benchmark model repository (default .facecraft/bench-repo-<preset>)",
    )
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway scenario")
    from facecraft import processors

    parser.add_argument(
        "--processor",
        choices=processors.names(),
        help="benchmark this processor's ensemble (registry, docs/processors.md) through Triton gRPC "
        "instead of the portrait scenarios: images/s at --concurrency (default 1,16) with conv probes",
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="with --processor: frames/s of the streaming video pipeline vs. a sequential per-frame loop "
        "through Triton, and peak RSS for a 5 s and a 30 s generated clip (--video-seconds)",
    )
    parser.add_argument(
        "--video-seconds",
        default="5,30",
        metavar="SHORT,LONG",
        help="with --video: the two clip lengths in seconds (default 5,30)",
    )
    parser.add_argument(
        "--video-fps",
        type=int,
        default=None,
        help="with --video: frame rate of the generated clips (default 10)",
    )
    parser.add_argument(
        "--video-size",
        default=None,
        metavar="WxH",
        help="with --video: frame size of the generated clips (default 160x120)",
    )
    parser.add_argument(
        "--video-repeats",
        type=int,
        default=2,
        help="with --video: sequential/streaming pairs on the short clip (default 2)",
    )
    parser.add_argument(
        "--photo-max-side",
        type=int,
        default=None,
        metavar="PX",
        help="with --processor: scale the photos down to at most PX on their longer side (e.g. to keep a "
        "full-preset frame_enhancer run short on CPU)",
    )
    parser.add_argument(
        "--plans",
        default="auto",
        help="instance plans to compare side by side, each with its own Triton (comma-separated): auto "
        "(the plan from --instances/--onnx-threads or the automatic one), N (N instances, cores/N threads), "
        "NxT, MODEL=NxT[+MODEL=NxT] (e.g. u2net=1x2); the first is the reference of every ratio",
    )
    parser.add_argument(
        "--rebuild-report",
        type=Path,
        default=None,
        metavar="JSON",
        help="recompute the ratios of a saved report (<stem>.json) with the current rules and rewrite "
        "<stem>.json and <stem>.md; measures nothing. With --repo, the MACs are counted again from that "
        "repository's ONNX models (required for a report of version 4 or older)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        metavar="N",
        help="paired rounds per mode of the sequential baseline right before Triton gRPC at the top "
        "concurrency (the headline Triton/sequential ratio is their median; default 2, --quick 0, 0 = off: "
        "the faster of the start and end passes)",
    )
    parser.add_argument(
        "--scenarios", default="sequential,triton,gateway", help="subset to run (comma-separated)"
    )
    from facecraft.runtime.cli import add_instance_plan_arguments

    add_instance_plan_arguments(parser)
    parser.set_defaults(func=run_bench)


def _video_size(text: str) -> tuple[int, int]:
    """``WxH`` → (width, height), each even and at least 32 (H.264 4:2:0); ``ValueError`` otherwise."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--video-size takes WxH, e.g. 160x120, not {text!r}") from None
    if min(width, height) < 32 or width % 2 or height % 2:
        raise ValueError(f"--video-size {text}: width and height must be even and at least 32")
    return width, height


def run_bench(args: argparse.Namespace) -> int:
    from facecraft.bench.harness import BenchConfig, run_benchmark

    if args.rebuild_report is not None:
        from facecraft.bench.report import rebuild
        from facecraft.cli import CliError

        try:
            md_path, json_path = rebuild(args.rebuild_report, model_repository=args.repo)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CliError(f"cannot rebuild {args.rebuild_report}: {error}") from error
        print(f"report: {md_path}\n        {json_path}")
        return 0

    default_concurrency = [1, 16] if args.processor else [1, 4, 16]
    concurrency = args.concurrency or ([1, 2] if args.quick else default_concurrency)
    requests = args.requests or (3 if args.quick else 16)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.no_gateway and "gateway" in scenarios:
        scenarios.remove("gateway")
    config = BenchConfig(
        preset=args.preset,
        device=args.device,
        quick=args.quick,
        photos_dir=args.photos,
        photo_max_side=args.photo_max_side,
        concurrency=concurrency,
        requests=requests,
        enhanced_requests=args.enhanced_requests,
        out_dir=args.out,
        repo=args.repo,
        scenarios=tuple(scenarios),
        instances=args.instances,
        onnx_threads=args.onnx_threads,
        python_instances=args.python_instances,
        precision=args.precision,
        gpu_accelerator=args.gpu_accelerator,
        plans=tuple(p.strip() for p in args.plans.split(",") if p.strip()) or ("auto",),
        pairs=args.pairs if args.pairs is not None else (0 if args.quick else 2),
        model_bound_runs=1 if args.quick else 2,
    )
    from facecraft.bench.harness import instance_plan, parse_plan_spec
    from facecraft.cli import CliError

    try:
        for spec in config.plans:
            parse_plan_spec(spec, instance_plan(config))
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.video and not args.processor:
        raise CliError("--video goes with --processor NAME (a per-frame processor)")
    if args.pairs is not None and args.pairs < 0:
        raise CliError("--pairs must be 0 or more")
    if args.photo_max_side is not None and args.photo_max_side < 16:
        raise CliError("--photo-max-side must be at least 16 px")
    if args.video:
        from facecraft.bench.processors import VIDEO_FPS, VIDEO_SIZE, run_video_benchmark

        try:
            seconds = tuple(float(s) for s in args.video_seconds.split(","))
            if len(seconds) != 2 or not 0 < seconds[0] < seconds[1]:
                raise ValueError("--video-seconds takes SHORT,LONG seconds, e.g. 5,30")
            fps = args.video_fps or VIDEO_FPS
            size = _video_size(args.video_size) if args.video_size else VIDEO_SIZE
            if fps < 1 or args.video_repeats < 1:
                raise ValueError("--video-fps and --video-repeats must be at least 1")
            md_path, json_path = run_video_benchmark(
                config, args.processor, seconds, repeats=args.video_repeats, fps=fps, size=size
            )
        except ValueError as error:
            raise CliError(str(error)) from error
    elif args.processor:
        from facecraft.bench.processors import run_processor_benchmark

        try:
            md_path, json_path = run_processor_benchmark(config, args.processor)
        except ValueError as error:
            raise CliError(str(error)) from error
    else:
        md_path, json_path = run_benchmark(config)
    print(f"report: {md_path}\n        {json_path}")
    return 0
