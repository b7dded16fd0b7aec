"""``/api/v1/process``, ``/api/v1/process/quick`` and ``/api/v1/process/batch``: validate, delegate."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from facecraft.gateway.errors import GatewayError, error_responses
from facecraft.gateway.forms import form_fields, list_fields, portrait_options, refuse_unknown_fields
from facecraft.gateway.health import UNTRAINED_WARNING
from facecraft.gateway.schemas import BatchResponse, ProcessResponse
from facecraft.gateway.security import read_upload_capped, require_api_key, sanitize_filename
from facecraft.gateway.service import (
    NO_FACE_RESULT,
    SIDE_RANGE,
    b64,
    check_range,
    new_job_id,
    resolve_request,
    result_summary,
)
from facecraft.gateway.storage import JobRecord
from facecraft.gateway.triton import PortraitRequest
from facecraft.pipeline.decode import SUPPORTED_TYPES
from facecraft.pipeline.presets import presets_json

router = APIRouter(prefix="/api/v1", tags=["process"], dependencies=[Depends(require_api_key)])

# What an upload can be refused with before it reaches Triton ...
UPLOAD_ERRORS = (
    "invalid_request",
    "invalid_option",
    "invalid_image",
    "image_too_large",
    "unsupported_media_type",
    "file_too_large",
    "unauthorized",
    "server_busy",
)
# ... and what a synchronous inference adds.
INFERENCE_ERRORS = ("triton_unavailable", "model_unavailable", "triton_timeout", "internal_error")


def download_url(job_id: str, fmt: str) -> str:
    return f"/api/v1/download/{job_id}/{fmt}"


def batch_download_url(job_id: str, index: int, fmt: str) -> str:
    return f"/api/v1/download/{job_id}/{index}/{fmt}"


async def weights_fields(request: Request) -> dict:
    label = await request.app.state.weights.get()
    return {"weights": label, "warning": UNTRAINED_WARNING if label == "untrained" else None}


@router.post(
    "/process",
    response_model=ProcessResponse,
    response_model_exclude_none=True,
    summary="Process one photo into a portrait (PNG + size-capped JPEG)",
    responses=error_responses(*UPLOAD_ERRORS, *INFERENCE_ERRORS, "storage_error"),
)
async def process(
    request: Request,
    file: UploadFile = File(..., description=f"{SUPPORTED_TYPES} photo (sniffed by content)"),
    options: PortraitRequest = Depends(portrait_options),
    return_base64: bool = Form(False, description="also return both images base64-encoded"),
) -> dict:
    """Returns 200 with ``success=false, error=no_face_detected`` when no face is found (compatible
    with the original Facecraft); every other failure is an error status with the error shape. A
    form field this route does not take is 400 ``invalid_option``."""
    await refuse_unknown_fields(request, form_fields(process))
    settings = request.app.state.settings
    image = await read_upload_capped(file, settings.max_upload_bytes)
    service = request.app.state.service
    job_id, outcome = await service.process_and_store(image, options, sanitize_filename(file.filename))
    body: dict = {"job_id": job_id, "processing_time_ms": round(outcome.processing_time_ms, 1)}
    body.update(await weights_fields(request))
    if outcome.output is None:
        return {
            **body,
            "success": False,
            "result": NO_FACE_RESULT,
            "error": outcome.error,
            "error_message": outcome.error_message,
        }
    body.update(
        success=True,
        result=result_summary(outcome.output, options.model_name),
        png_url=download_url(job_id, "png"),
        jpg_url=download_url(job_id, "jpg"),
    )
    if return_base64:
        body.update(png_base64=b64(outcome.output.png), jpg_base64=b64(outcome.output.jpeg))
    if outcome.output.print_sheet is not None:
        body["layout_url"] = download_url(job_id, "layout")
        if return_base64:
            body["layout_base64"] = b64(outcome.output.print_sheet)
    return body


@router.get(
    "/presets",
    summary="ID-photo presets and print-sheet layouts (sizes, DPI, head/eye ranges, rules, sources)",
    responses=error_responses("unauthorized"),
)
async def presets() -> dict:
    """The table of ``facecraft.pipeline.presets`` (docs/presets.md); pass a ``name`` as ``preset=``."""
    return presets_json()


@router.post(
    "/process/quick",
    response_class=Response,
    summary="Process one photo and return the PNG directly",
    responses={
        200: {"content": {"image/png": {}}, "description": "the RGBA portrait, size×size"},
        **error_responses(*UPLOAD_ERRORS, *INFERENCE_ERRORS, "no_face_detected"),
    },
)
async def process_quick(
    request: Request,
    file: UploadFile = File(..., description=f"{SUPPORTED_TYPES} photo"),
    size: int | None = Form(None, description="output width and height, 64..4096 (default 648)"),
    enhance_face: bool | None = Form(None, description="CodeFormer restoration (default true)"),
) -> Response:
    """Defaults for every other option; nothing is stored. No face → 400 ``no_face_detected``; any
    other form field (``preset``, ``width``...: use ``/api/v1/process``) → 400 ``invalid_option``."""
    await refuse_unknown_fields(request, form_fields(process_quick))
    settings = request.app.state.settings
    if size is not None:
        check_range("size", size, *SIDE_RANGE)  # named as the client sent it, not width/height
    options = resolve_request(settings, width=size, height=size, enhance_face=enhance_face)
    image = await read_upload_capped(file, settings.max_upload_bytes)
    outcome = await request.app.state.service.infer(image, options)
    if outcome.output is None:
        raise GatewayError(400, outcome.error or "no_face_detected", outcome.error_message or "")
    weights = await request.app.state.weights.get()
    return Response(
        outcome.output.png,
        media_type="image/png",
        headers={
            "X-Face-Count": str(outcome.output.face_count),
            "X-Processing-Time-Ms": f"{outcome.processing_time_ms:.1f}",
            "X-Facecraft-Weights": weights,
        },
    )


@router.post(
    "/process/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    summary="Process several photos concurrently; per-file results and download URLs",
    responses=error_responses(
        "invalid_request",
        "invalid_option",
        "too_many_files",
        "file_too_large",
        "unauthorized",
        "storage_error",
        "internal_error",
    ),
)
async def process_batch(
    request: Request,
    files: list[UploadFile] = File(..., description="photos (≤ FACECRAFT_BATCH_MAX_FILES)"),
    width: int | None = Form(None, description="output width, 64..4096"),
    height: int | None = Form(None, description="output height, 64..4096"),
    return_base64: bool = Form(False, description="also return each PNG base64-encoded"),
    enhance_face: bool | None = Form(None, description="CodeFormer restoration (default true)"),
) -> dict:
    """Per-file failures (bad image, no face, Triton errors) are reported in ``results`` and do not
    fail the batch; each success has a working ``download_url`` (PNG) and ``jpg_url``. A form
    field this route does not take is 400 ``invalid_option``."""
    await refuse_unknown_fields(request, form_fields(process_batch), list_fields(process_batch))
    settings = request.app.state.settings
    if len(files) > settings.batch_max_files:
        raise GatewayError(
            400, "too_many_files", f"{len(files)} files; a batch takes at most {settings.batch_max_files}"
        )
    options = resolve_request(settings, width=width, height=height, enhance_face=enhance_face)
    service = request.app.state.service
    storage = request.app.state.storage
    job_id = new_job_id()
    started = time.perf_counter()

    async def one(index: int, upload: UploadFile) -> dict:
        name = sanitize_filename(upload.filename, fallback=f"file-{index}")
        try:
            image = await read_upload_capped(upload, settings.max_upload_bytes)
            outcome = await service.infer(image, options, wait_s=settings.triton_timeout_s)
            if outcome.output is None:
                return {
                    "filename": name,
                    "success": False,
                    "error": outcome.error,
                    "error_message": outcome.error_message,
                }
            stem = f"file-{index:04d}"
            await asyncio.to_thread(service.store_outputs, job_id, outcome.output, stem)
        except GatewayError as error:
            if error.error == "storage_error":
                raise
            return {"filename": name, "success": False, "error": error.error, "error_message": error.message}
        item = {
            "filename": name,
            "success": True,
            "download_url": batch_download_url(job_id, index, "png"),
            "jpg_url": batch_download_url(job_id, index, "jpg"),
            "result": result_summary(outcome.output, options.model_name),
        }
        if return_base64:
            item["png_base64"] = b64(outcome.output.png)
        return item

    try:
        items = await asyncio.gather(*(one(index, upload) for index, upload in enumerate(files)))
        successful = sum(1 for item in items if item["success"])
        now = time.time()
        record = JobRecord(
            job_id=job_id,
            kind="batch",
            status="completed",
            created_at=now,
            updated_at=now,
            options={"width": options.width, "height": options.height, "enhance": options.enhance},
            items=[{k: v for k, v in item.items() if k != "png_base64"} for item in items],
            processing_time_ms=(time.perf_counter() - started) * 1000.0,
        )
        if successful:
            await asyncio.to_thread(storage.save, record)
    except GatewayError:
        await asyncio.to_thread(storage.delete, job_id)
        raise
    return {
        "job_id": job_id,
        "total": len(items),
        "successful": successful,
        "failed": len(items) - successful,
        "processing_time_ms": round(record.processing_time_ms, 1),
        "results": items,
        **(await weights_fields(request)),
    }
