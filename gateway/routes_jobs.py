"""Async jobs, downloads and deletion: ``/api/v1/jobs*`` and ``/api/v1/download/*``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from facecraft.gateway import processors_service, video_jobs
from facecraft.gateway.errors import GatewayError, error_responses
from facecraft.gateway.forms import (
    PORTRAIT_FIELDS,
    form_fields,
    portrait_options,
    refuse_fields,
    refuse_unknown_fields,
)
from facecraft.gateway.routes_process import UPLOAD_ERRORS, download_url
from facecraft.gateway.schemas import DeleteResponse, JobStatus, JobSubmitted
from facecraft.gateway.security import (
    DOWNLOAD_FORMATS,
    read_upload_capped,
    require_api_key,
    sanitize_filename,
    validate_format,
    validate_job_id,
)
from facecraft.gateway.storage import JobRecord
from facecraft.gateway.triton import PortraitRequest
from facecraft.pipeline.decode import SUPPORTED_TYPES

router = APIRouter(prefix="/api/v1", tags=["jobs"], dependencies=[Depends(require_api_key)])

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "layout": "image/jpeg"}
EXTENSIONS = {"png": "png", "jpg": "jpg", "layout": "sheet.jpg"}
LOOKUP_ERRORS = ("invalid_job_id", "unauthorized", "not_found")


def _file_response(path, fmt: str, download_name: str, weights: str) -> FileResponse:
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[fmt],
        filename=download_name,
        headers={"X-Facecraft-Weights": weights, "Cache-Control": "no-store"},
    )


async def _record(request: Request, job_id: str) -> JobRecord:
    validate_job_id(job_id)
    return await asyncio.to_thread(request.app.state.storage.require, job_id)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobSubmitted,
    summary="Queue one photo for asynchronous processing (the portrait, or a processors chain)",
    responses=error_responses(
        *UPLOAD_ERRORS,
        *video_jobs.VIDEO_ERRORS,
        "storage_error",
        "not_found",
        "queue_unavailable",
        "processor_disabled",
        "invalid_request",
    ),
)
async def submit_job(
    request: Request,
    file: UploadFile = File(
        ..., description=f"{SUPPORTED_TYPES} photo, or a video with `processors` (docs/video.md)"
    ),
    source: UploadFile | None = File(
        None,
        description=f"{SUPPORTED_TYPES} photo: the identity of `face_swapper` (required when the chain "
        "has it, refused otherwise); `file` is its target, a photo or a video",
    ),
    options: PortraitRequest = Depends(portrait_options),
    processors: str | None = Form(
        None,
        description="ordered, comma-separated processors run as a chain instead of the portrait, "
        "e.g. `face_enhancer,background_remover` (GET /api/v1/processors)",
    ),
    processor_options: str | None = Form(
        None,
        description='with `processors`: JSON `{"<processor>": {"<option>": value}}`; `format` '
        "applies to the last one (intermediate results are PNG)",
    ),
    video_format: str | None = Form(
        None,
        description="a video upload: `mp4` (H.264, the default) or `webm` (VP9, with the alpha of "
        "an RGBA result such as background_remover's); a chain ending with face_analyser gives JSON lines",
    ),
) -> dict:
    """Same options as ``/api/v1/process``, or a ``processors`` chain; a video (docs/video.md)
    with ``processors`` runs the chain over every frame. ``face_swapper`` takes its identity in
    ``source`` (422 ``invalid_request`` without it; 400 ``invalid_option`` for a ``source`` no
    processor of the job takes; a source without a face fails the job with ``no_source_face``).
    Poll ``GET /api/v1/jobs/{id}``; the job survives a gateway restart (re-queued from its stored
    inputs; a video job from its first frame)."""
    await refuse_unknown_fields(request, form_fields(submit_job))
    settings = request.app.state.settings
    chain = chain_options = None
    if processors is None and "processors" in await request.form():
        raise GatewayError(
            400, "invalid_option", "processors: empty; name at least one (GET /api/v1/processors), "
            "or leave the field out for the portrait"
        )  # fmt: skip
    if processors is not None:
        chain = processors_service.parse_chain(processors)
        processors_service.check_enabled(chain, settings.disabled_processors)
        chain_options = processors_service.resolve_chain_options(chain, processor_options)
        await refuse_fields(
            request,
            PORTRAIT_FIELDS,
            "portrait options do not apply to a processors chain (its options go in processor_options)",
        )
    processors_service.check_job_uploads(chain, {"source": source is not None})
    extras = {}
    if source is not None:
        extras["SOURCE"] = await read_upload_capped(source, settings.max_upload_bytes)
    upload = await read_upload_capped(file, video_jobs.upload_cap(settings))
    video_output = video_jobs.video_job_output(upload, chain, chain_options, video_format, settings)
    record = await request.app.state.jobs.submit(
        upload,
        options,
        sanitize_filename(file.filename),
        processors=chain,
        processor_options=chain_options,
        video_output=video_output,
        extras=extras,
    )
    if chain is not None:
        return {
            "job_id": record.job_id,
            "status": record.status,
            "status_url": f"/api/v1/jobs/{record.job_id}",
            "result_url": f"/api/v1/jobs/{record.job_id}/result",
        }
    return {
        "job_id": record.job_id,
        "status": record.status,
        "status_url": f"/api/v1/jobs/{record.job_id}",
        "result_url": f"/api/v1/jobs/{record.job_id}/result?format=png",
    }


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    response_model_exclude_none=True,
    summary="Status of any job (async, process or batch)",
    responses=error_responses(*LOOKUP_ERRORS),
)
async def job_status(request: Request, job_id: str) -> dict:
    record = await _record(request, job_id)
    body = record.model_dump(
        include={
            "job_id",
            "kind",
            "status",
            "created_at",
            "updated_at",
            "attempts",
            "error",
            "error_message",
            "note",
            "result",
            "processing_time_ms",
            "processors",
            "media",
            "progress",
        }
    )
    if record.status == "completed" and record.files and not record.processors:
        body["png_url"] = download_url(job_id, "png")
        body["jpg_url"] = download_url(job_id, "jpg")
        if "layout" in record.files:
            body["layout_url"] = download_url(job_id, "layout")
    return body


@router.get(
    "/jobs/{job_id}/result",
    response_class=FileResponse,
    summary="The output of a completed async job",
    responses={
        200: {
            "content": {
                "image/png": {},
                "image/jpeg": {},
                "application/json": {},
                "video/mp4": {},
                "video/webm": {},
                "application/x-ndjson": {},
            },
            "description": "the portrait, or the last processor's result (JSON for face_analyser); "
            "a video job's MP4 / WebM, or JSON lines for face_analyser",
        },
        **error_responses(
            *LOOKUP_ERRORS, "invalid_format", "job_not_finished", "job_failed", "job_cancelled"
        ),
    },
)
async def job_result(
    request: Request,
    job_id: str,
    format: str | None = Query(
        None,
        description="portrait jobs: png (default), jpg or layout; a chain has one result: omit it, "
        "or name that result's own format (400 invalid_format otherwise)",
    ),
) -> FileResponse:
    known = {*DOWNLOAD_FORMATS, "jpeg", *processors_service.FILE_EXTENSIONS.values()}
    if format is not None and format not in known:  # checked first, as for any job
        raise GatewayError(400, "invalid_format", f"format must be one of {', '.join(sorted(known))}")
    record = await _record(request, job_id)
    if record.status in ("queued", "running"):
        raise GatewayError(409, "job_not_finished", f"job {job_id} is {record.status}")
    if record.status == "failed":
        raise GatewayError(409, "job_failed", f"job {job_id} failed: {record.error}: {record.error_message}")
    if record.status == "cancelled":
        raise GatewayError(409, "job_cancelled", f"job {job_id} was cancelled")
    if record.processors:
        name = record.files["result"]
        extension = name.rsplit(".", 1)[-1]
        if format is not None and format.replace("jpeg", "jpg") != extension.replace("jpeg", "jpg"):
            raise GatewayError(
                400,
                "invalid_format",
                f"job {job_id} is a processors chain with one result, a {extension} file; "
                f"omit format or ask for {extension}",
            )
        path = await asyncio.to_thread(request.app.state.storage.existing_file, job_id, name)
        return FileResponse(
            path,
            media_type=processors_service.media_type_of(name),
            filename=f"{record.processors[-1]}-{job_id}.{name.rsplit('.', 1)[-1]}",
            headers={
                "X-Facecraft-Weights": await request.app.state.weights.get(),
                "Cache-Control": "no-store",
            },
        )
    return await _download(request, record, validate_format(format or "png"))


async def _download(request: Request, record: JobRecord, fmt: str) -> FileResponse:
    name = record.files.get(fmt)
    if not name:
        raise GatewayError(404, "not_found", f"job {record.job_id} has no {fmt} output")
    path = await asyncio.to_thread(request.app.state.storage.existing_file, record.job_id, name)
    weights = await request.app.state.weights.get()
    return _file_response(path, fmt, f"portrait-{record.job_id}.{EXTENSIONS[fmt]}", weights)


@router.get(
    "/download/{job_id}/{fmt}",
    response_class=FileResponse,
    summary="Download the PNG or JPEG of a processed job",
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the portrait"},
        **error_responses(*LOOKUP_ERRORS, "invalid_format"),
    },
)
async def download(request: Request, job_id: str, fmt: str) -> FileResponse:
    validate_format(fmt)
    record = await _record(request, job_id)
    return await _download(request, record, fmt)


@router.get(
    "/download/{job_id}/{index}/{fmt}",
    response_class=FileResponse,
    summary="Download the PNG or JPEG of one file of a batch (index as in `results`)",
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the portrait"},
        **error_responses(*LOOKUP_ERRORS, "invalid_format", "invalid_request"),
    },
)
async def download_batch_file(request: Request, job_id: str, index: str, fmt: str) -> FileResponse:
    validate_format(fmt)
    if not index.isascii() or not index.isdigit() or len(index) > 4:
        raise GatewayError(
            400, "invalid_request", "index must be a file number from the batch results (0, 1, ...)"
        )
    record = await _record(request, job_id)
    position = int(index)
    if record.kind != "batch" or position >= len(record.items) or not record.items[position].get("success"):
        raise GatewayError(404, "not_found", f"batch job {job_id} has no successful file #{index}")
    path = await asyncio.to_thread(
        request.app.state.storage.existing_file, job_id, f"file-{position:04d}.{fmt}"
    )
    weights = await request.app.state.weights.get()
    return _file_response(path, fmt, f"portrait-{job_id}-{position}.{fmt}", weights)


@router.delete(
    "/jobs/{job_id}",
    response_model=DeleteResponse,
    response_model_exclude_none=True,
    summary="Cancel a queued or running job (it stops within seconds), or delete a finished one",
    responses=error_responses(*LOOKUP_ERRORS, "storage_error", "queue_unavailable"),
)
async def delete_job(request: Request, job_id: str) -> dict:
    validate_job_id(job_id)
    outcome = await request.app.state.jobs.cancel_or_delete(job_id)
    if outcome == "cancelled":
        return {"success": True, "job_id": job_id, "deleted": False, "cancelled": True}
    return {"success": True, "job_id": job_id, "deleted": True}
