"""The work of a video job: a processors chain over every frame, through the gateway's Triton layer.

:func:`run_video_chain` is what a video job executes (docs/video.md): each frame, as a PNG, goes
through :func:`facecraft.gateway.processors_service.run_processor` for each processor of the chain
(inference slots, metrics, ``model_unavailable`` checks included), with up to ``max_in_flight``
frames in flight; ``facecraft.pipeline.video`` decodes, re-orders and encodes. Not yet called by
the job queue: ``POST /api/v1/jobs`` with a video waits for the distributed-jobs rework.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from facecraft.client.processors import MEDIA_TYPES, ProcessorResult
from facecraft.client.video import (
    IMAGE_ONLY_PROCESSORS,
    NO_FACE_REPORT,
    output_kind,
    processor_frame_function,
)
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.processors_service import run_processor
from facecraft.gateway.service import PortraitService


async def _shielded(coroutine):
    """Await ``coroutine`` shielded from cancellation: a cancelled video job stops waiting at once,
    the Triton call ends by itself and its result is dropped (a gRPC call cancelled mid-inference
    can crash Triton 2.51, docs/reliability.md)."""
    task = asyncio.ensure_future(coroutine)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


async def run_frame_chain(
    service: PortraitService, chain: tuple[str, ...], image: bytes, options: dict[str, dict[str, object]]
) -> ProcessorResult:
    """One encoded frame through each processor of ``chain``. A step that finds no face passes
    its input on unchanged (``face_analyser``: an empty report). Raises ``GatewayError``."""
    result: ProcessorResult | None = None
    for name in chain:
        try:
            result = await _shielded(
                run_processor(service, name, image, options[name], wait_s=service.settings.triton_timeout_s)
            )
        except GatewayError as error:
            if error.error != "no_face_detected":
                raise
            if name == "face_analyser":
                return ProcessorResult(name, report=dict(NO_FACE_REPORT))
            result = ProcessorResult(name, data=image, media_type=MEDIA_TYPES["png"])
        image = result.data
    return result


async def run_video_chain(
    service: PortraitService,
    chain: tuple[str, ...],
    options: dict[str, dict[str, object]],
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    progress=None,
):
    """Run ``chain`` (resolved ``options`` per processor) over the video at ``source``; write
    ``destination`` (``.mp4``/``.webm``, or ``.jsonl`` when the chain ends with ``face_analyser``).

    Limits and frames in flight come from the settings (``FACECRAFT_VIDEO_*``). Returns the
    ``facecraft.pipeline.video.VideoResult``. Raises ``GatewayError`` 400 ``invalid_option`` for
    a chain or destination that cannot make a video (``portrait`` is per image only),
    ``PipelineError`` with a video code for a bad upload, and the chain's ``GatewayError``.
    """
    from facecraft.pipeline.video import process_video

    destination = Path(destination)
    image_only = [name for name in chain if name in IMAGE_ONLY_PROCESSORS]
    try:
        if image_only:
            raise ValueError(f"{image_only[0]} works on one image at a time only, not on a video")
        output = output_kind(chain[-1], destination)
    except ValueError as error:
        raise GatewayError(400, "invalid_option", str(error)) from None

    async def run(png: bytes) -> ProcessorResult:
        return await run_frame_chain(service, chain, png, options)

    settings = service.settings
    return await process_video(
        source,
        destination,
        processor_frame_function(run, chain[-1]),
        output=output,
        limits=settings.video_limits,
        max_in_flight=settings.video_max_in_flight,
        progress=progress,
    )
