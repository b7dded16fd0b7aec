"""Typed errors of the portrait ensembles, parsed from Triton error messages.

The ensembles report per-request failures as ``<code>: <step>: <detail>`` (see docs/triton.md),
e.g. ``no_face_detected: detect: no face found in a 1280x720 image``. Triton may wrap that text
(``in ensemble 'portrait', ...``), so the code is searched for, not only matched at the start.
"""

from __future__ import annotations

import re


class FacecraftError(Exception):
    """Base class. ``code`` is the contract's error code, ``step`` the ensemble step that failed."""

    code = "facecraft_error"

    def __init__(self, message: str, *, step: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.step = step
        self.detail = detail if detail is not None else message


class InvalidImage(FacecraftError):
    """Not a supported image type, truncated or corrupt data, or empty."""

    code = "invalid_image"


class ImageTooLarge(FacecraftError):
    """Byte size or declared pixel count above the server's cap."""

    code = "image_too_large"


class InvalidOption(FacecraftError):
    """An option out of range or of the wrong shape (rejected by the client or by ``decode``)."""

    code = "invalid_option"


class NoFaceDetected(FacecraftError):
    """No frontal face was found in the image."""

    code = "no_face_detected"


class NoSourceFace(FacecraftError):
    """face_swapper: the source image (the identity) has no face (or none of the chosen index)."""

    code = "no_source_face"


class ServerUnavailable(FacecraftError):
    """Triton (or the gateway) could not be reached, or the ensemble is not loaded/ready."""

    code = "server_unavailable"


class InternalServerError(FacecraftError):
    """An unexpected failure inside a step (``internal_error: <step>: ...``)."""

    code = "internal_error"


class ModelUnavailable(ServerUnavailable):
    """A model the request needs is not loaded in Triton (e.g. a segmentation variant not exported)."""

    code = "model_unavailable"


ERROR_CLASSES: dict[str, type[FacecraftError]] = {
    cls.code: cls
    for cls in (
        InvalidImage,
        ImageTooLarge,
        InvalidOption,
        NoFaceDetected,
        NoSourceFace,
        ServerUnavailable,
        ModelUnavailable,
        InternalServerError,
    )
}

_CODED_MESSAGE = re.compile(
    r"\b(?P<code>"
    + "|".join(re.escape(code) for code in ERROR_CLASSES)
    + r"):\s*(?P<step>[a-z_]+):\s*(?P<detail>.*)",
    re.DOTALL,
)

# Phrases with which tritonclient / Triton / grpc report that nothing usable is listening.
_UNAVAILABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "connect call failed",
    "unavailable",
    "deadline exceeded",
    "is not ready",
    "unknown model",
    "is not found",
    "no route to host",
    "name or service not known",
    "cannot connect",
    "server disconnected",
    "broken pipe",
)


def parse_error_message(message: str) -> FacecraftError:
    """Map a server error message to the matching ``FacecraftError`` subclass.

    Coded messages (``<code>: <step>: <detail>``) map to their class; transport/availability
    failures map to ``ServerUnavailable``; anything else becomes a plain ``FacecraftError``.
    """
    text = (message or "").strip()
    match = _CODED_MESSAGE.search(text)
    if match:
        cls = ERROR_CLASSES[match["code"]]
        detail = match["detail"].strip()
        return cls(f"{match['code']}: {match['step']}: {detail}", step=match["step"], detail=detail)
    lowered = text.lower()
    if any(hint in lowered for hint in _UNAVAILABLE_HINTS):
        return ServerUnavailable(text or "server unavailable")
    return FacecraftError(text or "unknown server error")


def error_from_exception(error: BaseException) -> FacecraftError:
    """Translate a tritonclient/transport exception into a ``FacecraftError``."""
    if isinstance(error, FacecraftError):
        return error
    message = error.message() if callable(getattr(error, "message", None)) else str(error)
    status = error.status() if callable(getattr(error, "status", None)) else None
    parsed = parse_error_message(str(message))
    if type(parsed) is FacecraftError and status and "UNAVAILABLE" in str(status).upper():
        return ServerUnavailable(str(message))
    if isinstance(error, (ConnectionError, OSError, TimeoutError)) and type(parsed) is FacecraftError:
        return ServerUnavailable(str(message) or type(error).__name__)
    return parsed
