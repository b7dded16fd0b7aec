"""Batch processing behind ``facecraft process``: collect photos, run them concurrently, write outputs.

Outputs are named after the inputs (``<stem>.png``, ``<stem>.jpg``) and written atomically
(temporary file in the output folder + rename), so an interrupted run never leaves a half-written
file. Per-file failures are collected, never raised; the caller turns them into the exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from facecraft.client.errors import FacecraftError, NoFaceDetected
from facecraft.client.processors import ProcessorResult
from facecraft.client.result import PortraitResult

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif", ".avif")

# (image bytes, file name) -> result; raises FacecraftError on a per-image failure.
Processor = Callable[[bytes, str], Awaitable[PortraitResult | ProcessorResult]]

STATUS_OK = "ok"
STATUS_NO_FACE = "no face"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file."""

    path: Path
    status: str  # STATUS_OK | STATUS_NO_FACE | STATUS_FAILED
    seconds: float
    error: str | None = None
    outputs: tuple[Path, ...] = ()


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (their image files, not recursive, sorted) into a list of photos.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` when two inputs would write
    the same output name (same stem).
    """
    images: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images.extend(
                sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen and seen[image.stem].resolve() != image.resolve():
            raise ValueError(f"{seen[image.stem]} and {image} would both write {image.stem}.png/.jpg")
        seen[image.stem] = image
    unique = {image.resolve(): image for image in images}
    return list(unique.values())


def videos_in_folders(paths: Iterable[str | Path]) -> list[Path]:
    """The video files (sniffed by content: ``facecraft.pipeline.video.video_container``) of the
    folders among ``paths``, which a folder scan (:func:`collect_images`) leaves out: a video is
    processed on its own (``facecraft process --processor NAME clip.mp4 -o out.mp4``)."""
    from facecraft.pipeline.video import video_container

    videos = []
    for raw in paths:
        folder = Path(raw)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
                with path.open("rb") as file:
                    if video_container(file.read(4096)) is not None:
                        videos.append(path)
    return videos


def _read_umask() -> int:
    """The process's umask (read by setting it and putting it back: done once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename;
    the file gets the mode a plain ``open`` would give (0666 less the umask, not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_result(result: PortraitResult | ProcessorResult, out_dir: Path, stem: str) -> tuple[Path, ...]:
    """A portrait's ``<stem>.png`` and ``<stem>.jpg`` (with an ID-photo preset also
    ``<stem>.compliance.json`` and ``<stem>.sheet.jpg``), or a processor's files
    (``ProcessorResult.files``); returns the paths written."""
    if isinstance(result, ProcessorResult):
        files = result.files(stem)
    else:
        files = [(f"{stem}.png", result.png), (f"{stem}.jpg", result.jpeg)]
        if result.compliance is not None:  # an ID-photo preset: its report and print sheet beside them
            files.append((f"{stem}.compliance.json", json.dumps(result.compliance, indent=2).encode()))
        if result.print_sheet is not None:
            files.append((f"{stem}.sheet.jpg", result.print_sheet))
    for name, data in files:
        write_atomically(out_dir / name, data)
    return tuple(out_dir / name for name, _ in files)


async def process_files(
    images: list[Path],
    out_dir: Path,
    processor: Processor,
    *,
    concurrency: int = 4,
    on_done: Callable[[FileOutcome], None] | None = None,
) -> list[FileOutcome]:
    """Run ``processor`` over ``images`` with at most ``concurrency`` requests in flight.

    Returns one ``FileOutcome`` per image, in input order.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    semaphore = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> FileOutcome:
        async with semaphore:
            started = time.perf_counter()
            try:
                data = await asyncio.to_thread(path.read_bytes)
                result = await processor(data, path.name)
                outputs = await asyncio.to_thread(write_result, result, out_dir, path.stem)
                outcome = FileOutcome(path, STATUS_OK, time.perf_counter() - started, outputs=outputs)
            except NoFaceDetected as error:
                outcome = FileOutcome(path, STATUS_NO_FACE, time.perf_counter() - started, str(error))
            except (FacecraftError, OSError) as error:
                outcome = FileOutcome(path, STATUS_FAILED, time.perf_counter() - started, str(error))
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(path) for path in images)))


def format_summary(outcomes: list[FileOutcome], elapsed_s: float) -> str:
    """A plain-text summary: one line per problem file, then counts and throughput."""
    counts = {
        status: sum(1 for o in outcomes if o.status == status)
        for status in (STATUS_OK, STATUS_NO_FACE, STATUS_FAILED)
    }
    lines = []
    problems = [o for o in outcomes if o.status != STATUS_OK]
    if problems:
        width = max(len(o.path.name) for o in problems)
        lines.append(f"{'file'.ljust(width)}  {'status':<8}  error")
        for outcome in problems:
            lines.append(f"{outcome.path.name.ljust(width)}  {outcome.status:<8}  {outcome.error}")
        lines.append("")
    throughput = counts[STATUS_OK] / elapsed_s if elapsed_s > 0 else 0.0
    lines.append(f"{'ok':<10}{'no face':<10}{'failed':<10}{'total':<10}{'seconds':<10}ok images/s")
    lines.append(
        f"{counts[STATUS_OK]:<10}{counts[STATUS_NO_FACE]:<10}{counts[STATUS_FAILED]:<10}"
        f"{len(outcomes):<10}{elapsed_s:<10.2f}{throughput:.2f}"
    )
    return "\n".join(lines)
