"""The one error shape of the gateway: ``{success: false, error, error_message}``.

Every failure a route can produce is a :class:`GatewayError` with a stable machine-readable
``error`` code, an HTTP status and a human-readable message; the app's exception handlers turn it
(and FastAPI's own validation / routing errors) into that JSON body.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from facecraft.pipeline.decode import SUPPORTED_TYPES


class ErrorResponse(BaseModel):
    """Body of every error response."""

    success: bool = Field(False, description="always false")
    error: str = Field(..., description="machine-readable error code, e.g. `invalid_image`")
    error_message: str = Field(..., description="what went wrong, for humans")


class GatewayError(Exception):
    """A failure with an HTTP status, an error code and a message (and optional headers)."""

    def __init__(self, status_code: int, error: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{error}: {message}")
        self.status_code = status_code
        self.error = error
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return ErrorResponse(error=self.error, error_message=self.message).model_dump()


# error code -> (HTTP status, when) — the documented catalogue (docs/api.md and OpenAPI).
ERROR_CATALOGUE: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "a form field or parameter is missing or has the wrong type"),
    "invalid_option": (400, "an option is out of range (the message names it)"),
    "invalid_image": (400, "the upload is corrupt, truncated or empty"),
    "image_too_large": (400, "the image's pixel count is above the cap (decompression bomb guard)"),
    "no_face_detected": (
        200,
        "no frontal face found (HTTP 200 with success=false on /process, for compatibility; "
        "400 on /process/quick and /processors/{name})",
    ),
    "no_source_face": (
        400,
        "face_swapper: the `source` image (the identity) has no face (or no face of index source_face)",
    ),
    "unsupported_media_type": (415, f"the upload is not {SUPPORTED_TYPES} (sniffed by content)"),
    "file_too_large": (413, "the upload (or request body) is above FACECRAFT_MAX_UPLOAD_MB"),
    "invalid_video": (400, "a video job's upload is not a supported video container (docs/video.md)"),
    "corrupt_video": (400, "a video is truncated or cannot be decoded (docs/video.md)"),
    "no_video_stream": (400, "a video container has no video stream (docs/video.md)"),
    "unsupported_video_codec": (415, "a video's codec is not supported (docs/video.md)"),
    "video_too_large": (413, "a video is above FACECRAFT_VIDEO_MAX_MB or FACECRAFT_VIDEO_MAX_FRAME_PIXELS"),
    "video_too_long": (413, "a video is above FACECRAFT_VIDEO_MAX_FRAMES or FACECRAFT_VIDEO_MAX_DURATION_S"),
    "too_many_files": (400, "a batch has more than FACECRAFT_BATCH_MAX_FILES files"),
    "invalid_job_id": (400, "a job id is not 32 lowercase hex characters"),
    "invalid_format": (400, "a download format is not png or jpg"),
    "unauthorized": (401, "FACECRAFT_API_KEY is set and X-API-Key is missing or wrong"),
    "not_found": (
        404,
        "no such route, job, file or processor (the message lists the valid processors; expired "
        "jobs are deleted by cleanup)",
    ),
    "method_not_allowed": (405, "the route exists but not with this HTTP method"),
    "job_not_finished": (409, "the async job is still queued or running"),
    "job_failed": (409, "the async job failed; its error is in GET /api/v1/jobs/{id}"),
    "job_cancelled": (409, "the async job was cancelled by DELETE; a second DELETE removes it"),
    "server_busy": (503, "all inference slots are taken; retry after Retry-After seconds"),
    "triton_unavailable": (503, "Triton cannot be reached or a model is not ready; retry later"),
    "model_unavailable": (
        503,
        "the model (or a step of its ensemble, or a background_remover model variant) is not loaded in "
        "Triton; the message names it (and, for a variant, the loaded ones; Retry-After set)",
    ),
    "model_not_found": (404, "no model of that name; the message lists the valid ones"),
    "model_load_failed": (409, "Triton could not load the model (its files are missing or broken)"),
    "admin_disabled": (403, "model administration is switched off (FACECRAFT_ADMIN_ROUTES=false)"),
    "processor_disabled": (
        403,
        "the operator switched the processor off (FACECRAFT_DISABLED_PROCESSORS); it is absent from "
        "GET /api/v1/processors",
    ),
    "export_unavailable": (501, "this gateway cannot export models (the `export` extra is not installed)"),
    "repository_unknown": (409, "FACECRAFT_MODEL_REPOSITORY is not set, so models cannot be exported"),
    "queue_unavailable": (
        503,
        "the job broker (FACECRAFT_JOB_BACKEND's Redis) cannot be reached; nothing was queued, retry later",
    ),
    "triton_timeout": (504, "the inference took longer than FACECRAFT_TRITON_TIMEOUT_S"),
    "storage_error": (507, "results could not be written (disk full: 507; other I/O errors: 500)"),
    "internal_error": (500, "an unexpected failure in the gateway or a Triton model"),
}


def pipeline_error(error) -> GatewayError:
    """The gateway error of a ``facecraft.pipeline.errors.PipelineError`` raised in the gateway
    itself (a submit-time check of an image or a video): the catalogue's status for its code, the
    pipeline's ``<code>: <step>: <detail>`` as the message."""
    return GatewayError(ERROR_CATALOGUE[error.code][0], error.code, str(error))


def error_responses(*codes: str) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` for a route: each status with its error codes listed."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        status, _ = ERROR_CATALOGUE[code]
        if code == "no_face_detected":
            status = 400
        by_status.setdefault(status, []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": "; ".join(f"`{code}`: {ERROR_CATALOGUE[code][1]}" for code in names),
        }
        for status, names in sorted(by_status.items())
    }
