"""One function per Triton Python model: contract tensors in → contract tensors out.

Names, dtypes and shapes follow docs/triton.md (arrays here have NO batch dimension). The
``model.py`` files only move tensors between Triton and these functions, so the whole
per-request behaviour is testable without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from facecraft.pipeline import processor_stages
from facecraft.pipeline.align import prepare_face, restore_face
from facecraft.pipeline.compose import compose_portrait
from facecraft.pipeline.decode import decode_image
from facecraft.pipeline.detect import detect_face
from facecraft.pipeline.errors import INVALID_IMAGE, INVALID_OPTION, NO_FACE_DETECTED, PipelineError
from facecraft.pipeline.options import (
    IdPhotoRequest,
    Options,
    apply_preset,
    resolve_fidelity,
    resolve_id_photo,
    resolve_options,
)
from facecraft.pipeline.segment import prepare_segmentation

Tensors = Mapping[str, "np.ndarray | None"]

# Ensemble option inputs → resolve_options keyword.
OPTION_INPUTS = {
    "WIDTH": "width",
    "HEIGHT": "height",
    "BACKGROUND": "background",
    "FACE_MARGIN": "face_margin",
    "OVAL_MASK": "oval_mask",
    "MAX_JPEG_KB": "max_jpeg_kb",
    "TOUCH_UP": "touch_up",
}
# Text options (BYTES [1]): an ID-photo preset and a print-sheet layout (docs/presets.md).
TEXT_INPUTS = {"PRESET": "preset", "LAYOUT": "layout"}
DECODE_INPUTS = ("IMAGE", *OPTION_INPUTS, "FIDELITY", *TEXT_INPUTS)


def _option_value(input_name: str, array: np.ndarray | None):
    """A Python scalar (or RGB tuple for BACKGROUND) from an option tensor; None when absent."""
    if array is None:
        return None
    values = np.asarray(array).reshape(-1)
    keyword = OPTION_INPUTS.get(input_name, input_name.lower())
    expected = 3 if input_name == "BACKGROUND" else 1
    if values.size != expected:
        raise PipelineError(
            INVALID_OPTION, "decode", f"{keyword} must have {expected} value(s), got {values.size}"
        )
    if input_name == "BACKGROUND":
        return tuple(v.item() for v in values)
    return values[0].item()


def _text_value(input_name: str, array: np.ndarray | None) -> str | None:
    """A text option (BYTES tensor of one element) as str; None when absent."""
    if array is None:
        return None
    values = np.asarray(array).reshape(-1)
    if values.size != 1:
        raise PipelineError(
            INVALID_OPTION, "decode", f"{TEXT_INPUTS[input_name]} must have 1 value, got {values.size}"
        )
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _require(inputs: Tensors, name: str, step: str) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise PipelineError(
            INVALID_IMAGE if name == "IMAGE" else INVALID_OPTION, step, f"missing input {name}"
        )
    return value


def decode_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """IMAGE BYTES + optional options → RGB, ORIGINAL_SIZE, OPTIONS, FIDELITY_W, ID_PHOTO [2].

    With a PRESET the preset fixes the size and drops the oval; its background and byte limit
    apply unless the request sets BACKGROUND / a lower MAX_JPEG_KB (``apply_preset``).
    """
    from facecraft.pipeline.triton_adapter import first_bytes

    values = {kw: _option_value(name, inputs.get(name)) for name, kw in OPTION_INPUTS.items()}
    id_photo = resolve_id_photo(
        **{kw: _text_value(name, inputs.get(name)) for name, kw in TEXT_INPUTS.items()}
    )
    options = apply_preset(
        resolve_options(**values),
        id_photo.preset,
        background_set=values["background"] is not None,
        max_jpeg_kb_set=values["max_jpeg_kb"] is not None,
    )
    fidelity = resolve_fidelity(_option_value("FIDELITY", inputs.get("FIDELITY")))
    image = _require(inputs, "IMAGE", "decode")
    if np.asarray(image).size != 1:
        raise PipelineError(
            INVALID_IMAGE, "decode", f"IMAGE must hold one encoded image, got {np.asarray(image).size}"
        )
    decoded = decode_image(first_bytes(image), background=options.background)
    return {
        "RGB": decoded.rgb,
        "ORIGINAL_SIZE": np.array(decoded.original_size, dtype=np.int32),
        "OPTIONS": options.to_vector(),
        "FIDELITY_W": np.array([fidelity], dtype=np.float32),
        "ID_PHOTO": id_photo.to_vector(),
    }


def detect_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """RGB → LANDMARKS [68, 2], FACE_BOX_WORK [4], FACE_COUNT [1]."""
    detection = detect_face(np.ascontiguousarray(_require(inputs, "RGB", "detect"), dtype=np.uint8))
    return {
        "LANDMARKS": detection.landmarks.astype(np.float32),
        "FACE_BOX_WORK": detection.box.astype(np.float32),
        "FACE_COUNT": np.array([detection.face_count], dtype=np.int32),
    }


def enhance_pre_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """RGB, LANDMARKS → FACE_INPUT [3, 512, 512] in [-1, 1], AFFINE [2, 3]."""
    face_input, affine = prepare_face(
        _require(inputs, "RGB", "enhance_pre"), _require(inputs, "LANDMARKS", "enhance_pre")
    )
    return {"FACE_INPUT": face_input, "AFFINE": affine}


def enhance_post_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """RGB, RESTORED [3, 512, 512], AFFINE → ENHANCED (HWC uint8, same size as RGB)."""
    enhanced = restore_face(
        _require(inputs, "RGB", "enhance_post"),
        _require(inputs, "RESTORED", "enhance_post"),
        _require(inputs, "AFFINE", "enhance_post"),
    )
    return {"ENHANCED": enhanced}


def segment_pre_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """RGB + FACE_COUNT → SEG_INPUT [3, 320, 320].

    FACE_COUNT (from detect) makes segmentation wait for a detected face, so no step fails while
    a parallel branch runs (see model_repository/segment_pre/config.pbtxt) and a no-face photo
    never reaches U²-Net.
    """
    face_count = int(np.asarray(_require(inputs, "FACE_COUNT", "segment_pre")).reshape(-1)[0])
    if face_count < 1:
        raise PipelineError(NO_FACE_DETECTED, "segment_pre", "segmentation needs a detected face")
    return {"SEG_INPUT": prepare_segmentation(_require(inputs, "RGB", "segment_pre"))}


def compose_stage(inputs: Tensors, *, mask_trusted: bool = False) -> dict[str, np.ndarray]:
    """RGB, SEG_MAP, LANDMARKS, FACE_BOX_WORK, OPTIONS, ORIGINAL_SIZE, FACE_COUNT, ID_PHOTO → PNG,
    JPEG, FACE_BOX, JPEG_CAP_MET, OUTPUT_SIZE, COMPLIANCE (JSON bytes, empty without a preset),
    PRINT_SHEET (JPEG bytes, empty without a layout).

    ``mask_trusted``: the segmentation weights are trained, so the crown and the background
    uniformity may come from the mask (the compose model reads u2net's ``export.json``).
    """
    from facecraft.pipeline.idphoto import compose_preset
    from facecraft.pipeline.triton_adapter import bytes_tensor

    original = _require(inputs, "ORIGINAL_SIZE", "compose").reshape(-1)
    arguments = {
        "rgb": np.ascontiguousarray(_require(inputs, "RGB", "compose"), dtype=np.uint8),
        "seg_map": _require(inputs, "SEG_MAP", "compose"),
        "landmarks": _require(inputs, "LANDMARKS", "compose"),
        "face_box": _require(inputs, "FACE_BOX_WORK", "compose"),
        "options": Options.from_vector(_require(inputs, "OPTIONS", "compose")),
        "original_size": (int(original[0]), int(original[1])),
    }
    id_vector = inputs.get("ID_PHOTO")  # absent (a caller of the stage alone): no preset
    id_photo = IdPhotoRequest() if id_vector is None else IdPhotoRequest.from_vector(id_vector)
    compliance, sheet = b"", b""
    if id_photo.preset is None:
        portrait = compose_portrait(**arguments)
    else:
        face_count = int(np.asarray(_require(inputs, "FACE_COUNT", "compose")).reshape(-1)[0])
        portrait, report, sheet = compose_preset(
            **arguments, request=id_photo, face_count=face_count, mask_trusted=mask_trusted
        )
        compliance = json.dumps(report, separators=(",", ":")).encode()
    return {
        "PNG": bytes_tensor(portrait.png),
        "JPEG": bytes_tensor(portrait.jpeg),
        "FACE_BOX": np.array(portrait.face_box, dtype=np.int32),
        "JPEG_CAP_MET": np.array([portrait.jpeg_cap_met], dtype=np.bool_),
        "OUTPUT_SIZE": np.array(portrait.output_size, dtype=np.int32),
        "COMPLIANCE": bytes_tensor(compliance),
        "PRINT_SHEET": bytes_tensor(sheet),
    }


STAGE_INPUTS = {
    "decode": DECODE_INPUTS,
    "detect": ("RGB",),
    "enhance_pre": ("RGB", "LANDMARKS"),
    "enhance_post": ("RGB", "RESTORED", "AFFINE"),
    "segment_pre": ("RGB", "FACE_COUNT"),
    "compose": (
        "RGB",
        "SEG_MAP",
        "LANDMARKS",
        "FACE_BOX_WORK",
        "OPTIONS",
        "ORIGINAL_SIZE",
        "FACE_COUNT",
        "ID_PHOTO",
    ),
    # processor ensembles (facecraft.pipeline.processor_stages, docs/processors.md)
    "faces": processor_stages.FACES_INPUTS,
    "face_enhance": processor_stages.FACE_ENHANCE_INPUTS,
    "enhance_frame": processor_stages.ENHANCE_FRAME_INPUTS,
    "face_swap": processor_stages.FACE_SWAP_INPUTS,
    "face_analyse": processor_stages.FACE_ANALYSE_INPUTS,
    "background_remove": processor_stages.BACKGROUND_REMOVE_INPUTS,
}
STAGES = {
    "decode": decode_stage,
    "detect": detect_stage,
    "enhance_pre": enhance_pre_stage,
    "enhance_post": enhance_post_stage,
    "segment_pre": segment_pre_stage,
    "compose": compose_stage,
    "faces": processor_stages.faces_stage,
    # these two call another model (BLS): their model.py binds `infer` (StageModel.bind_stage)
    "face_enhance": processor_stages.face_enhance_stage,
    "enhance_frame": processor_stages.enhance_frame_stage,
    "face_swap": processor_stages.face_swap_stage,
    "face_analyse": processor_stages.face_analyse_stage,
    "background_remove": processor_stages.background_remove_stage,
}
