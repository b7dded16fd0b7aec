"""Response bodies of the REST contract (documented in OpenAPI and docs/api.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FacePosition(BaseModel):
    x: int = Field(..., description="left edge of the face box in the (EXIF-oriented) input, pixels")
    y: int = Field(..., description="top edge, pixels")
    width: int
    height: int


class OutputSize(BaseModel):
    width: int
    height: int


class ProcessResult(BaseModel):
    face_detected: bool
    face_count: int = Field(..., description="faces found; the largest one is used")
    face_position: FacePosition | None = None
    output_size: OutputSize | None = None
    file_size_bytes: int = Field(..., description="size of the JPEG (the size-capped deliverable)")
    png_size_bytes: int | None = None
    jpeg_cap_met: bool | None = Field(
        None, description="false when even the lowest JPEG quality is above max_jpeg_kb"
    )
    model: str | None = Field(None, description="ensemble used: portrait or portrait_basic")
    compliance: dict[str, Any] | None = Field(
        None, description="ID-photo compliance report (with a preset; docs/presets.md)"
    )


class ProcessResponse(BaseModel):
    """``POST /api/v1/process``. No face: HTTP 200, ``success=false``, ``error=no_face_detected``."""

    success: bool
    job_id: str
    processing_time_ms: float
    result: ProcessResult
    png_url: str | None = None
    jpg_url: str | None = None
    png_base64: str | None = None
    jpg_base64: str | None = None
    layout_url: str | None = Field(None, description="print sheet JPEG (with preset and layout)")
    layout_base64: str | None = None
    error: str | None = None
    error_message: str | None = None
    weights: str = Field("unknown", description="trained | untrained | unknown (model weights)")
    warning: str | None = Field(None, description="set when the weights are untrained")


class BatchItem(BaseModel):
    filename: str = Field(..., description="the uploaded file name, sanitised, display only")
    success: bool
    download_url: str | None = Field(None, description="PNG of this file")
    jpg_url: str | None = None
    error: str | None = None
    error_message: str | None = None
    result: ProcessResult | None = None
    png_base64: str | None = None


class BatchResponse(BaseModel):
    job_id: str
    total: int
    successful: int
    failed: int
    processing_time_ms: float
    results: list[BatchItem]
    weights: str = "unknown"
    warning: str | None = None


class JobSubmitted(BaseModel):
    job_id: str
    status: str = Field(..., description="queued")
    status_url: str
    result_url: str


class ProcessorJobResult(BaseModel):
    """``result`` of a processors-chain job (``GET /api/v1/jobs/{id}``)."""

    processor: str = Field(..., description="the last processor of the chain")
    processors: list[str] = Field(..., description="the chain, in order")
    media_type: str = Field(..., description="of GET /api/v1/jobs/{id}/result")
    face_count: int | None = Field(None, description="faces found by the last processor (face processors)")
    output_size: OutputSize | None = None
    # a video job (docs/video.md): the output's
    frames: int | None = Field(None, description="video job: frames written (the input's count)")
    fps: float | None = Field(None, description="video job: frame rate (the input's)")
    width: int | None = Field(None, description="video job: frame width, pixels")
    height: int | None = Field(None, description="video job: frame height, pixels")
    audio: str | None = Field(None, description="video job: copied, re-encoded to <codec>, or absent")


class VideoProgress(BaseModel):
    """``progress`` of a video job (persisted at most once a second while it runs)."""

    frames_done: int = Field(..., description="frames written so far")
    frames_total: int = Field(..., description="frames of the video")
    fps: float | None = Field(None, description="frames written per second so far")
    eta_s: float | None = Field(None, description="seconds left at that rate (absent before the first frame)")
    elapsed_s: float | None = Field(None, description="seconds since the first frame was read")


class ProcessorList(BaseModel):
    """``GET /api/v1/processors``: the registry (facecraft.processors)."""

    processors: list[dict] = Field(
        ..., description="name, description, input, output, output_formats, options, ensembles, models"
    )


class JobStatus(BaseModel):
    job_id: str
    kind: str = Field(..., description="process | batch | async")
    status: str = Field(..., description="queued | running | completed | failed | cancelled")
    created_at: float = Field(..., description="Unix time")
    updated_at: float
    attempts: int = 0
    error: str | None = None
    error_message: str | None = None
    note: str | None = None
    result: ProcessResult | ProcessorJobResult | None = None
    processing_time_ms: float | None = None
    png_url: str | None = None
    jpg_url: str | None = None
    layout_url: str | None = None
    processors: list[str] | None = Field(None, description="the processors chain of the job, when it has one")
    media: str | None = Field(None, description="async jobs: image, or video")
    progress: VideoProgress | None = Field(None, description="video jobs: frames done / total, fps, ETA")


class DeleteResponse(BaseModel):
    success: bool = True
    job_id: str
    deleted: bool = Field(..., description="true: the job and its files are gone")
    cancelled: bool | None = Field(None, description="true: the queued or running job was cancelled (kept)")


class HealthResponse(BaseModel):
    status: str = "ok"
    version: str


class ReadyResponse(BaseModel):
    ready: bool
    checks: dict[str, str]
    reason: str | None = None
    checked_at: float


class StatusResponse(BaseModel):
    version: str
    uptime_s: float
    device: str
    weights: str
    triton: dict[str, Any]
    models: list[dict[str, Any]]
    statistics: dict[str, Any]
