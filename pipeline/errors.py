"""The one error type of the pipeline: a stable machine-readable code, the step, a human detail."""

from __future__ import annotations

# Codes a caller can act on (documented in docs/triton.md, "Errors").
INVALID_IMAGE = "invalid_image"
IMAGE_TOO_LARGE = "image_too_large"
INVALID_OPTION = "invalid_option"
NO_FACE_DETECTED = "no_face_detected"
# A model a step calls (BLS) is not loaded in Triton (not exported, unloaded): the message names it.
MODEL_UNAVAILABLE = "model_unavailable"
ERROR_CODES = (INVALID_IMAGE, IMAGE_TOO_LARGE, INVALID_OPTION, NO_FACE_DETECTED, MODEL_UNAVAILABLE)


class PipelineError(ValueError):
    """A per-request failure caused by the input. ``str()`` is ``"<code>: <step>: <detail>"``."""

    def __init__(self, code: str, step: str, detail: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown pipeline error code {code!r}")
        self.code = code
        self.step = step
        self.detail = detail
        super().__init__(f"{code}: {step}: {detail}")
