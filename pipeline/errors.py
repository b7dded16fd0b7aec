"""The one error type of the pipeline: a stable machine-readable code, the step, a human detail."""

from __future__ import annotations

# Codes a caller can act on (documented in docs/triton.md, "Errors").
INVALID_IMAGE = "invalid_image"
IMAGE_TOO_LARGE = "image_too_large"
INVALID_OPTION = "invalid_option"
NO_FACE_DETECTED = "no_face_detected"
# A model a step calls (BLS) is not loaded in Triton (not exported, unloaded): the message names it.
MODEL_UNAVAILABLE = "model_unavailable"
# face_swapper: the SOURCE image (the identity) has no (such) face; the target's is no_face_detected.
NO_SOURCE_FACE = "no_source_face"
ERROR_CODES = (
    INVALID_IMAGE, IMAGE_TOO_LARGE, INVALID_OPTION, NO_FACE_DETECTED, MODEL_UNAVAILABLE, NO_SOURCE_FACE,
)  # fmt: skip


class PipelineError(ValueError):
    """A per-request failure caused by the input. ``str()`` is ``"<code>: <step>: <detail>"``."""

    def __init__(self, code: str, step: str, detail: str):
        if code not in ERROR_CODES and code not in VIDEO_ERROR_CODES:
            raise ValueError(f"unknown pipeline error code {code!r}")
        self.code = code
        self.step = step
        self.detail = detail
        super().__init__(f"{code}: {step}: {detail}")


# Codes of a video upload (facecraft.pipeline.video, documented in docs/video.md, "Errors"); raised
# before and while frames are streamed, never by a Triton model.
INVALID_VIDEO = "invalid_video"
CORRUPT_VIDEO = "corrupt_video"
NO_VIDEO_STREAM = "no_video_stream"
UNSUPPORTED_VIDEO_CODEC = "unsupported_video_codec"
VIDEO_TOO_LARGE = "video_too_large"
VIDEO_TOO_LONG = "video_too_long"
VIDEO_ERROR_CODES = (
    INVALID_VIDEO,
    CORRUPT_VIDEO,
    NO_VIDEO_STREAM,
    UNSUPPORTED_VIDEO_CODEC,
    VIDEO_TOO_LARGE,
    VIDEO_TOO_LONG,
)
