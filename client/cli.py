"""``facecraft process`` (the benchmark commands live in ``facecraft.bench.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from facecraft import processors
from facecraft.cli import ENV_PRECEDENCE, env_argument
from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}


def register(subparsers) -> None:
    _register_process(subparsers)


# --- process -----------------------------------------------------------------------------------


def _background(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("background must be R,G,B (e.g. 240,240,240)")
    try:
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"background must be three integers: {text!r}") from error


def _register_process(subparsers) -> None:
    parser = subparsers.add_parser(
        "process",
        help="turn photos (files or folders) into portraits via Triton (or the gateway), or run a "
        "processor over a video (one video file, -o the output file)",
        description="Process photos concurrently; writes <stem>.png and <stem>.jpg per input into OUTDIR. "
        "Exit code 1 when any file failed or had no face.",
        epilog=ENV_PRECEDENCE,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUTDIR")
    parser.add_argument(
        "--url",
        help="Triton host:port (default: $FACECRAFT_TRITON_URL with --protocol grpc, "
        "else 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--via-gateway", metavar="URL", help="use the gateway's REST API at URL instead of Triton"
    )
    env_argument(parser, "--api-key", env="FACECRAFT_API_KEY", default=None, help="gateway API key")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument(
        "--processor",
        choices=processors.names(),
        default="portrait",
        help="what to run on each photo (default portrait; docs/processors.md); the flags below "
        "are the portrait's, other processors take --option",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of --processor (repeatable), e.g. --option fidelity=0.5 --option format=jpeg",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="FILE",
        help="face_swapper: the photo whose face (identity) is swapped into every PATH (photos, "
        "or every frame of one video: the source embedded once)",
    )
    parser.add_argument("--no-enhance", action="store_true", help="skip CodeFormer (portrait_basic ensemble)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--background", type=_background, metavar="R,G,B")
    parser.add_argument("--face-margin", type=float)
    parser.add_argument("--oval-mask", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--fidelity", type=float, help="CodeFormer fidelity 0..1")
    parser.add_argument("--max-jpeg-kb", type=int)
    parser.add_argument("--touch-up", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="ID-photo preset (docs/presets.md): exact size, DPI, head geometry; writes <stem>.compliance.json",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUT_NAMES,
        help="also a print sheet at 300 dpi (<stem>.sheet.jpg); needs --preset",
    )
    parser.add_argument(
        "--shared-memory", action="store_true", help="pass images via Triton system shared memory"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.set_defaults(func=run_process)


def run_process(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from facecraft.cli import CliError
    from facecraft.client.batch import (
        IMAGE_SUFFIXES,
        STATUS_OK,
        collect_images,
        format_summary,
        process_files,
        videos_in_folders,
    )
    from facecraft.client.errors import FacecraftError
    from facecraft.client.options import PortraitOptions

    try:
        options = PortraitOptions(
            enhance=not args.no_enhance,
            width=args.width,
            height=args.height,
            background=args.background,
            face_margin=args.face_margin,
            oval_mask=args.oval_mask,
            fidelity=args.fidelity,
            max_jpeg_kb=args.max_jpeg_kb,
            touch_up=args.touch_up,
            preset=args.preset,
            layout=args.layout,
        )
        processor_options = _processor_options(args)
        source = _swap_source(args)
        video = _single_video(args.paths)
        images = [] if video is not None else collect_images(args.paths)
    except (FacecraftError, FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from error
    if video is not None:
        return _run_video(args, video, processor_options or {}, source)
    skipped = [] if video is not None else videos_in_folders(args.paths)
    if skipped:
        print(
            f"facecraft process: {len(skipped)} video(s) in the folders left out ({', '.join(p.name for p in skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''}): a folder is processed photo by photo; run a video on its own, "
            f"e.g. facecraft process --processor face_enhancer {skipped[0]} -o out.mp4",
            file=sys.stderr,
        )
    if not images:
        raise CliError("no image files found in the given paths")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    if args.out.suffix.lower() in IMAGE_SUFFIXES and not args.out.is_dir():
        raise CliError(
            f"-o {args.out} looks like a file, but for photos -o names the output folder (each photo "
            f"gives <folder>/<its name>.png); e.g. -o {args.out.with_suffix('')}"
        )
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)

    async def run() -> tuple[list, float]:
        client = _make_async_client(args)
        try:

            async def processor(data: bytes, name: str):
                if source is not None:  # face_swapper: each PATH is a target
                    data = {"SOURCE": source, "TARGET": data}
                if processor_options is not None:
                    if args.via_gateway:
                        return await client.run_processor(args.processor, data, name, **processor_options)
                    return await client.run_processor(args.processor, data, **processor_options)
                if args.via_gateway:
                    return await client.process_with(data, options, filename=name)
                return await client.process_with(data, options)

            desc = "portraits" if processor_options is None else args.processor
            with tqdm(total=len(images), unit="img", desc=desc, file=sys.stderr) as bar:

                def on_done(outcome) -> None:
                    bar.update(1)
                    if outcome.status != STATUS_OK:
                        bar.write(f"{outcome.path.name}: {outcome.status}: {outcome.error}", file=sys.stderr)

                started = time.perf_counter()
                outcomes = await process_files(
                    images, args.out, processor, concurrency=args.concurrency, on_done=on_done
                )
                return outcomes, time.perf_counter() - started
        finally:
            await client.close()

    try:
        outcomes, elapsed = asyncio.run(run())
    finally:
        if created and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()  # nothing written: leave no empty folder behind
    print(format_summary(outcomes, elapsed))
    return 0 if all(o.status == STATUS_OK for o in outcomes) else 1


def _swap_source(args: argparse.Namespace) -> bytes | None:
    """The ``--source`` photo's bytes for ``--processor face_swapper`` (required there, refused
    elsewhere); ``ValueError`` otherwise."""
    if args.processor != "face_swapper":
        if args.source is not None:
            raise ValueError("--source is for --processor face_swapper")
        return None
    if args.source is None:
        raise ValueError("--processor face_swapper needs --source FILE (the face to swap in)")
    return args.source.read_bytes()  # FileNotFoundError when it is missing


def _single_video(paths: list[str]) -> Path | None:
    """The one PATH when it is a video file (sniffed by content, docs/video.md), else None."""
    from facecraft.pipeline.video import video_container

    if len(paths) != 1 or not Path(paths[0]).is_file():
        return None
    with open(paths[0], "rb") as file:
        return Path(paths[0]) if video_container(file.read(64)) is not None else None


def _run_video(
    args: argparse.Namespace, source: Path, options: dict[str, str], identity: bytes | None = None
) -> int:
    """``facecraft process --processor NAME clip.mp4 -o out.mp4``: every frame through the
    processor, a progress bar of frames; exit 1 when the video or a frame fails. face_swapper:
    ``identity`` is the ``--source`` photo; through Triton its embedding is computed once
    (``client.identity``, a faceless source fails before the first frame) and sent with every
    frame; through the gateway each frame's request carries the photo."""
    from tqdm import tqdm

    from facecraft.cli import CliError
    from facecraft.client.errors import FacecraftError
    from facecraft.client.video import output_kind, process_video_file
    from facecraft.pipeline.errors import PipelineError

    try:
        output_kind(args.processor, args.out)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.out.is_dir():
        raise CliError(f"-o names the output file for a video (e.g. {source.stem}.out.mp4), not a folder")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    async def run():
        client = _make_async_client(args)
        try:
            extra = {}
            if identity is not None:
                if args.via_gateway:
                    extra = {"SOURCE": identity}
                else:
                    embedding = await client.identity(args.processor, identity, **options)
                    extra = {"SOURCE_EMBEDDING": embedding}

            async def one_frame(data: bytes):
                if extra:
                    data = {**extra, "TARGET": data}
                if args.via_gateway:
                    return await client.run_processor(args.processor, data, "frame.png", **options)
                return await client.run_processor(args.processor, data, **options)

            with tqdm(unit="frame", desc=f"{args.processor} {source.name}", file=sys.stderr) as bar:

                def on_progress(progress) -> None:
                    bar.total = progress.frames_total
                    bar.update(progress.frames_done - bar.n)

                return await process_video_file(
                    one_frame,
                    args.processor,
                    source,
                    args.out,
                    max_in_flight=args.concurrency,
                    progress=on_progress,
                )
        finally:
            await client.close()

    try:
        result = asyncio.run(run())
    except (PipelineError, FacecraftError) as error:
        print(f"{source.name}: {error}", file=sys.stderr)
        return 1
    print(
        f"{result.frames} frames at {float(result.fps):g} fps -> {result.path} (audio: {result.audio or 'none'})"
    )
    return 0


def _processor_options(args: argparse.Namespace) -> dict[str, str] | None:
    """``--option NAME=VALUE`` pairs of a non-portrait ``--processor``, validated by the registry
    (``InvalidOption`` names the option); None for the portrait (its own flags apply)."""
    from facecraft.client.processors import resolve_processor_options

    if args.processor == "portrait":
        if args.option:
            raise ValueError("--option is for the other processors; the portrait has its own flags")
        return None
    pairs = {}
    for text in args.option:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--option must be NAME=VALUE, got {text!r}")
        pairs[name.strip()] = value.strip()
    resolve_processor_options(args.processor, pairs)
    return pairs


def triton_url_default(protocol: str, environ=None) -> str:
    """Where ``facecraft process`` finds Triton without ``--url``: ``$FACECRAFT_TRITON_URL`` (a gRPC
    endpoint, so only for ``grpc``), else 127.0.0.1 on Triton's default port for ``protocol``."""
    environ = os.environ if environ is None else environ
    from_env = environ.get("FACECRAFT_TRITON_URL", "").strip() if protocol == "grpc" else ""
    return from_env or f"127.0.0.1:{DEFAULT_PORTS[protocol]}"


def _make_async_client(args: argparse.Namespace):
    if args.via_gateway:
        from facecraft.client.gateway_client import AsyncGatewayClient

        return AsyncGatewayClient(args.via_gateway, timeout_s=args.timeout, api_key=args.api_key)
    from facecraft.client.async_portrait_client import AsyncPortraitClient

    url = args.url or triton_url_default(args.protocol)
    return AsyncPortraitClient(
        url, args.protocol, timeout_s=args.timeout, use_shared_memory=args.shared_memory
    )
