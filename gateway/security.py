"""Input hardening: API key, job-id and format validation, upload sniffing and size caps.

Everything here is pure (or takes an ``UploadFile``) and is unit-tested without a server.
"""

from __future__ import annotations

import hmac
import re
import unicodedata

from fastapi import Request, UploadFile
from PIL import Image

from facecraft.gateway.errors import GatewayError, pipeline_error
from facecraft.pipeline.decode import SUPPORTED_TYPES, open_image, sniff_format, verify_image
from facecraft.pipeline.errors import PipelineError

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
DOWNLOAD_FORMATS = ("png", "jpg", "layout")  # layout: the print sheet (JPEG) of an ID-photo preset
READ_CHUNK_BYTES = 1024 * 1024


def check_api_key(expected: str | None, presented: str | None) -> None:
    """Raise 401 ``unauthorized`` unless no key is configured or ``presented`` matches it."""
    if not expected:
        return
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise GatewayError(
            401,
            "unauthorized",
            "missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for ``/api/v1/*``: enforces ``FACECRAFT_API_KEY`` when it is set."""
    secret = request.app.state.settings.api_key
    check_api_key(secret.get_secret_value() if secret else None, request.headers.get("x-api-key"))


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is 32 lowercase hex characters (a uuid4 hex), else raise 400."""
    if not JOB_ID_PATTERN.fullmatch(job_id or ""):
        raise GatewayError(400, "invalid_job_id", "a job id is 32 lowercase hexadecimal characters")
    return job_id


def validate_format(fmt: str) -> str:
    """Return ``fmt`` if it is ``png``, ``jpg`` or ``layout``, else raise 400 ``invalid_format``."""
    if fmt not in DOWNLOAD_FORMATS:
        raise GatewayError(400, "invalid_format", "format must be 'png', 'jpg' or 'layout'")
    return fmt


def sanitize_filename(name: str | None, fallback: str = "upload") -> str:
    """A display-only version of a client file name: base name, printable, ≤ 128 characters.

    Never used to build a path: stored files get generated names.
    """
    if not name:
        return fallback
    base = re.split(r"[\\/]", name)[-1]
    cleaned = "".join(ch for ch in base if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    cleaned = cleaned.strip().strip(".")
    return cleaned[:128] or fallback


async def read_upload_capped(upload: UploadFile, max_bytes: int) -> bytes:
    """Read an upload in chunks, raising 413 ``file_too_large`` as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await upload.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise GatewayError(
                413, "file_too_large", f"upload is larger than the {max_bytes / 1048576:g} MB cap"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _not_an_image(data: bytes) -> str:
    """The 415 message; it names a video when the upload is one (docs/video.md)."""
    from facecraft.pipeline.video import CONTAINER_NAMES, video_container  # loads PyAV: only here

    message = f"the upload is not a {SUPPORTED_TYPES} image"
    container = video_container(data)
    if container == "gif":  # a still GIF is no video: say what GIFs are taken as
        message += "; it is a GIF, taken as a video only (POST /api/v1/jobs with processors=, docs/video.md)"
    elif container is not None:
        message += f"; it is a video ({CONTAINER_NAMES[container]}), which this endpoint does not take"
    return message


def validate_image_bytes(data: bytes, max_pixels: int) -> str:
    """Check an upload before it goes to Triton; return its sniffed type.

    Raises 400 ``invalid_image`` for empty data, 415 ``unsupported_media_type`` when the content
    is not JPEG/PNG/WebP/BMP/HEIF/AVIF (:func:`facecraft.pipeline.decode.sniff_format`), and 400
    ``image_too_large`` when the header declares more than ``max_pixels`` pixels (read cheaply from
    the header with the decode step's Pillow opener; corrupt data is left for Triton's decoder to
    report as ``invalid_image``).
    """
    if not data:
        raise GatewayError(400, "invalid_image", "the uploaded file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise GatewayError(415, "unsupported_media_type", _not_an_image(data))
    try:
        with open_image(data, kind) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise GatewayError(400, "image_too_large", f"declared image size is too large ({error})") from None
    except Exception:
        return kind  # Pillow cannot parse the header: Triton's decode step will say why.
    if width * height > max_pixels:
        raise GatewayError(
            400,
            "image_too_large",
            f"image is {width}x{height} = {width * height} pixels, above the {max_pixels} pixel cap",
        )
    return kind


def verify_image_bytes(data: bytes, max_pixels: int) -> str:
    """:func:`validate_image_bytes`, then one decode of the whole image
    (:func:`facecraft.pipeline.decode.verify_image`): 400 ``invalid_image`` for corrupt or
    truncated data, ``image_too_large`` as the decode step. For an upload that is queued rather
    than answered at once (``POST /api/v1/jobs``), so that no job that can only fail is accepted.
    Blocking (7–41 ms for the shared photos here): call it in a thread. Returns the sniffed type."""
    kind = validate_image_bytes(data, max_pixels)
    try:
        verify_image(data, max_pixels=max_pixels)
    except PipelineError as error:
        raise pipeline_error(error) from None
    return kind
