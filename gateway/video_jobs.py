"""The work of a video job: a processors chain over every frame, through the gateway's Triton layer.

:func:`run_video_chain` is what a video job executes (docs/video.md): each frame, as a PNG, goes
through :func:`facecraft.gateway.processors_service.run_processor` for each processor of the chain
(inference slots, metrics, ``model_unavailable`` checks included), with up to ``max_in_flight``
frames in flight; ``facecraft.pipeline.video`` decodes, re-orders and encodes.
:func:`execute_video_job` is that work as an async job (``JobRunner.execute``, both backends):
the stored upload in, ``result.<mp4|webm|jsonl>`` out, the progress persisted on the job record.
:func:`check_video_upload` is the submit-time check (``POST /api/v1/jobs``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from facecraft import processors as registry
from facecraft.client.processors import MEDIA_TYPES, ProcessorResult
from facecraft.client.video import (
    IMAGE_ONLY_PROCESSORS,
    NO_FACE_REPORT,
    output_kind,
    processor_frame_function,
)
from facecraft.gateway.errors import GatewayError, pipeline_error
from facecraft.gateway.processors_service import run_processor, source_identities, step_images
from facecraft.gateway.service import PortraitService
from facecraft.gateway.storage import INPUT_NAME, JobGone, JobRecord, JobStorage
from facecraft.pipeline.errors import PipelineError

# Job output by the video_format form field (the last processor's result), and its media type.
VIDEO_FORMATS = ("mp4", "webm")
RESULT_MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "jsonl": "application/x-ndjson"}
PROGRESS_WRITE_S = 1.0  # the least time between two progress writes of a job record


def check_video_chain(chain: tuple[str, ...]) -> None:
    """400 ``invalid_option`` unless every processor of ``chain`` runs per frame
    (``Processor.per_frame`` in ``facecraft.processors``; ``portrait`` is per image only)."""
    image_only = [name for name in chain if name in IMAGE_ONLY_PROCESSORS]
    if image_only:
        raise GatewayError(
            400,
            "invalid_option",
            f"{image_only[0]} works on one image at a time only, not on a video; a video job takes "
            f"per-frame processors: {', '.join(registry.per_frame_names())}",
        )


def job_output(chain: tuple[str, ...], video_format: str | None) -> str:
    """The output kind of a video job: ``jsonl`` when ``chain`` ends with ``face_analyser``, else
    ``video_format`` (``mp4``, the default, or ``webm``: VP9 with the alpha of an RGBA result).
    400 ``invalid_option`` otherwise."""
    if registry.get(chain[-1]).output_kind == "json":
        if video_format not in (None, "jsonl"):
            raise GatewayError(400, "invalid_option", f"{chain[-1]} writes JSON lines, not {video_format}")
        return "jsonl"
    video_format = video_format or "mp4"
    if video_format not in VIDEO_FORMATS:
        raise GatewayError(
            400,
            "invalid_option",
            f"video_format must be one of {', '.join(VIDEO_FORMATS)}, not {video_format!r}",
        )
    return video_format


VIDEO_ERRORS = (
    "invalid_video",
    "corrupt_video",
    "no_video_stream",
    "unsupported_video_codec",
    "video_too_large",
    "video_too_long",
)


def upload_cap(settings) -> int:
    """Bytes ``POST /api/v1/jobs`` reads of an upload: the larger of the image cap
    (``FACECRAFT_MAX_UPLOAD_MB``, enforced again for an image by :func:`video_job_output`) and the
    video cap (``FACECRAFT_VIDEO_MAX_MB``)."""
    return max(settings.max_upload_bytes, int(settings.video_max_mb * 1024 * 1024))


def video_job_output(
    upload: bytes,
    chain: tuple[str, ...] | None,
    chain_options: dict[str, dict[str, object]] | None,
    video_format: str | None,
    settings,
) -> str | None:
    """The submit-time checks of ``POST /api/v1/jobs`` by what the upload is (sniffed by content):
    an image → None (413 ``file_too_large`` above ``FACECRAFT_MAX_UPLOAD_MB``; 400 with a
    ``video_format``); a video → the job's output kind (:func:`job_output`), after 415
    ``unsupported_media_type`` for a video without ``processors`` (the portrait job) and 400
    ``invalid_option`` for a chain with a per-image processor (``portrait``).
    The last processor's ``format`` is set to PNG in ``chain_options`` (each frame lossless)."""
    from facecraft.pipeline.video import CONTAINER_NAMES, video_container

    if video_container(upload[:64]) is None:
        if len(upload) > settings.max_upload_bytes:
            raise GatewayError(
                413,
                "file_too_large",
                f"upload is larger than the {settings.max_upload_bytes / 1048576:g} MB cap "
                "(FACECRAFT_MAX_UPLOAD_MB; videos: FACECRAFT_VIDEO_MAX_MB)",
            )
        if video_format is not None:
            raise GatewayError(400, "invalid_option", "video_format applies to a video upload only")
        return None
    if chain is None:  # the portrait job, as the image endpoints refuse a video (415)
        raise GatewayError(
            415,
            "unsupported_media_type",
            f"the upload is a video ({CONTAINER_NAMES[video_container(upload[:64])]}): the portrait "
            "works on one image at a time only; send the video with processors= (per-frame: "
            f"{', '.join(registry.per_frame_names())})",
        )
    check_video_chain(chain)
    last = chain_options[chain[-1]]
    if "format" in last:
        last["format"] = "png"
    return job_output(chain, video_format)


def check_video_upload(path: str | os.PathLike, settings) -> dict:
    """Probe the stored upload of a video job (blocking) against the ``FACECRAFT_VIDEO_*`` limits:
    returns ``frames_total``, ``fps``, ``width``, ``height``, ``duration_s``; raises the video's
    :class:`GatewayError` (``corrupt_video``, ``video_too_long``, …: :func:`~facecraft.gateway.errors.pipeline_error`)."""
    from facecraft.pipeline.video import probe_video

    try:
        info = probe_video(path, settings.video_limits)
    except PipelineError as error:
        raise pipeline_error(error) from None
    return {
        "frames_total": info.frames,
        "fps": float(info.fps),
        "width": info.width,
        "height": info.height,
        "duration_s": info.duration_s,
    }


async def _shielded(coroutine):
    """Await ``coroutine`` shielded from cancellation: a cancelled video job stops waiting at once,
    the Triton call ends by itself and its result is dropped (a gRPC call cancelled mid-inference
    can crash Triton 2.51, docs/reliability.md)."""
    task = asyncio.ensure_future(coroutine)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


def read_extra_inputs(storage: JobStorage, record: JobRecord) -> dict[str, bytes]:
    """The job's stored extra uploads (``record.inputs``: face_swapper's ``SOURCE``) by ensemble
    input (blocking). Raises :class:`GatewayError` 404 when one is gone."""
    return {tensor: storage.read_file(record.job_id, name) for tensor, name in record.inputs.items()}


async def run_frame_chain(
    service: PortraitService,
    chain: tuple[str, ...],
    image: bytes,
    options: dict[str, dict[str, object]],
    extras: dict[str, object] | None = None,
) -> ProcessorResult:
    """One encoded frame through each processor of ``chain`` (``extras``: the job's other inputs,
    face_swapper's precomputed ``SOURCE_EMBEDDING``). A step that finds no face passes its input on
    unchanged (``face_analyser``: an empty report). Raises ``GatewayError``."""
    result: ProcessorResult | None = None
    for name in chain:
        try:
            result = await _shielded(
                run_processor(
                    service,
                    name,
                    step_images(name, image, extras),
                    options[name],
                    wait_s=service.settings.triton_timeout_s,
                )
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
    output: str | None = None,
    before_frame=None,
    extras: dict[str, bytes] | None = None,
):
    """Run ``chain`` (resolved ``options`` per processor) over the video at ``source``; write
    ``destination`` (``.mp4``/``.webm``, or ``.jsonl`` when the chain ends with ``face_analyser``;
    ``output`` names the kind when the destination's suffix does not, as for a job's result).
    ``before_frame()``, when given, is called before each frame goes to Triton; what it raises
    stops the video (the frames already in flight finish in Triton, their results dropped).
    ``extras``: the job's other uploads by ensemble input (face_swapper's ``SOURCE``); an identity
    among them is computed once, before the first frame is decoded
    (``processors_service.source_identities``: a source without a face fails at once with
    ``no_source_face``), and sent with every frame.

    Limits and frames in flight come from the settings (``FACECRAFT_VIDEO_*``). Returns the
    ``facecraft.pipeline.video.VideoResult``. Raises ``GatewayError`` 400 ``invalid_option`` for
    a chain or destination that cannot make a video (``portrait`` is per image only),
    ``PipelineError`` with a video code for a bad upload, and the chain's ``GatewayError``.
    """
    from facecraft.pipeline.video import process_video

    destination = Path(destination)
    check_video_chain(chain)
    if output is None:
        try:
            output = output_kind(chain[-1], destination)
        except ValueError as error:
            raise GatewayError(400, "invalid_option", str(error)) from None

    settings = service.settings
    if extras:
        extras = await _shielded(
            source_identities(service, chain, options, extras, wait_s=settings.triton_timeout_s)
        )

    async def run(png: bytes) -> ProcessorResult:
        if before_frame is not None:
            before_frame()
        return await run_frame_chain(service, chain, png, options, extras)

    return await process_video(
        source,
        destination,
        processor_frame_function(run, chain[-1]),
        output=output,
        limits=settings.video_limits,
        max_in_flight=settings.video_max_in_flight,
        progress=progress,
    )


def progress_fields(progress) -> dict:
    """A ``facecraft.pipeline.video.Progress`` as the job status's ``progress`` object."""
    eta = progress.eta_s
    return {
        "frames_done": progress.frames_done,
        "frames_total": progress.frames_total,
        "fps": round(progress.fps, 3),
        "eta_s": None if eta is None else round(eta, 3),
        "elapsed_s": round(progress.elapsed_s, 3),
    }


async def execute_video_job(service: PortraitService, record: JobRecord) -> None:
    """The work of a video job (``record.media == "video"``): ``record.processors`` over every
    frame of the stored upload, written to ``result.<output>`` (renamed into place complete, so
    a re-run after a restart replaces it whole and a cancelled run leaves none).

    ``record.progress`` is persisted at most every :data:`PROGRESS_WRITE_S` seconds (and at the
    end) by a status transition from ``running``: a write that finds the job cancelled or deleted
    stops the job before its next frame (:class:`JobGone`; the frames in flight finish in Triton,
    their results dropped). This is how a ``DELETE`` stops a job whose worker the broker could not
    reach; normally the backend cancels the job's task (each Triton call is shielded from it).
    Raises :class:`GatewayError` (a bad video: :func:`~facecraft.gateway.errors.pipeline_error`; :class:`JobGone`)."""
    storage = service.storage
    chain = tuple(record.processors or ())
    output = record.video_output or "mp4"
    name = f"result.{output}"
    source = storage.file_path(record.job_id, INPUT_NAME)
    destination = storage.file_path(record.job_id, name)
    writes: dict = {"task": None, "at": 0.0, "stopped": False}

    def persist(snapshot: JobRecord) -> None:
        try:
            still_running = storage.transition(snapshot, ("running",))
        except JobGone:
            still_running = False
        if not still_running:
            writes["stopped"] = True  # cancelled or deleted: the next frame stops the job

    def check_running() -> None:
        if writes["stopped"]:
            raise JobGone(record.job_id)

    def on_progress(progress) -> None:
        record.progress = progress_fields(progress)
        now = time.monotonic()
        pending = writes["task"]
        if (pending is not None and not pending.done()) or now - writes["at"] < PROGRESS_WRITE_S:
            return
        writes["at"] = now
        writes["task"] = asyncio.ensure_future(asyncio.to_thread(persist, record.model_copy(deep=True)))

    started = time.perf_counter()
    extras = await asyncio.to_thread(read_extra_inputs, storage, record)
    try:
        result = await run_video_chain(
            service,
            chain,
            record.options,
            source,
            destination,
            progress=on_progress,
            output=output,
            before_frame=check_running,
            extras=extras,
        )
    except PipelineError as error:
        raise pipeline_error(error) from None
    except FileNotFoundError:  # the job folder went away under the encoder (deleted)
        raise JobGone(record.job_id) from None
    finally:
        if writes["task"] is not None:
            await asyncio.gather(writes["task"], return_exceptions=True)
    record.files = {"result": name}
    record.result = {
        "processor": chain[-1],
        "processors": list(chain),
        "media_type": RESULT_MEDIA_TYPES[output],
        "frames": result.frames,
        "fps": float(result.fps),
        "width": result.width,
        "height": result.height,
        "audio": result.audio or "none",  # always present: "none" for a clip without audio
    }
    record.processing_time_ms = (time.perf_counter() - started) * 1000.0
