"""A processor over a video, frame by frame, through the client (``facecraft process clip.mp4``).

Each frame goes to the processor's ensemble as a PNG (lossless) with up to ``max_in_flight``
requests in flight (``facecraft.pipeline.video`` streams, re-orders and encodes). A frame with no
face is passed through unchanged (``face_analyser``: ``{"face_count": 0, "faces": []}``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facecraft import processors as registry
from facecraft.client.errors import NoFaceDetected
from facecraft.client.processors import ProcessorResult

# Processors that work on one image at a time only (docs/video.md).
IMAGE_ONLY_PROCESSORS = tuple(name for name in registry.names() if not registry.get(name).per_frame)
NO_FACE_REPORT = {"face_count": 0, "faces": []}


def output_kind(processor: str, destination: Path) -> str:
    """``jsonl`` for ``face_analyser``; ``webm`` for a ``.webm`` destination; else ``mp4``.
    Raises ``ValueError`` for a processor that works on images only or a mismatched suffix."""
    if processor in IMAGE_ONLY_PROCESSORS:
        raise ValueError(f"{processor} works on one image at a time only; videos take a per-frame processor")
    suffix = destination.suffix.lower()
    if processor == "face_analyser":
        if suffix != ".jsonl":
            raise ValueError("face_analyser writes one JSON line per frame: name the output <name>.jsonl")
        return "jsonl"
    if suffix == ".jsonl":
        raise ValueError(f"{processor} writes a video: name the output <name>.mp4 or <name>.webm")
    return "webm" if suffix == ".webm" else "mp4"


def processor_frame_function(
    run: Callable[[bytes], Awaitable[ProcessorResult]], processor: str
) -> Callable[[np.ndarray], Awaitable[np.ndarray | dict]]:
    """The per-frame function of ``facecraft.pipeline.video.process_video`` for one processor:
    HWC uint8 RGB → PNG → ``run(png)`` → HWC uint8 RGB/RGBA (from the result's image) or the
    ``face_analyser`` report (dict). ``NoFaceDetected`` passes the frame through unchanged."""

    async def frame_function(rgb: np.ndarray) -> np.ndarray | dict:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
        try:
            result = await run(buffer.getvalue())
        except NoFaceDetected:
            return dict(NO_FACE_REPORT) if processor == "face_analyser" else rgb
        if result.report is not None:
            return result.report
        with Image.open(io.BytesIO(result.data)) as image:
            mode = "RGBA" if "A" in image.getbands() else "RGB"
            return np.asarray(image.convert(mode), dtype=np.uint8)

    return frame_function


async def process_video_file(
    run: Callable[[bytes], Awaitable[ProcessorResult]],
    processor: str,
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    max_in_flight: int = 8,
    progress=None,
):
    """Run ``processor`` (through ``run``, one encoded frame → its result) on every frame of the
    video at ``source``; write ``destination`` (see :func:`output_kind`). Returns the
    ``facecraft.pipeline.video.VideoResult``; raises what ``process_video`` raises."""
    from facecraft.pipeline.video import process_video

    destination = Path(destination)
    return await process_video(
        source,
        destination,
        processor_frame_function(run, processor),
        output=output_kind(processor, destination),
        max_in_flight=max_in_flight,
        progress=progress,
    )
