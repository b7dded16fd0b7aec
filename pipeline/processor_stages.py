"""The Python steps of the processor ensembles (``face_enhancer``, ``background_remover``,
``face_analyser``; docs/processors.md has their tensor contracts).

Like ``stages``, each step is a function from named arrays (no batch dimension) to named arrays;
a step that calls another Triton model (BLS) takes that call as ``infer(model, inputs, outputs)``,
so the whole behaviour is testable without Triton. Options are validated against the processors
registry (``facecraft.processors``), the one place their ranges are defined.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping

import cv2
import numpy as np
from PIL import Image

from facecraft import processors as registry
from facecraft.pipeline.align import from_network, paste_back, prepare_face
from facecraft.pipeline.compose import composite_on_background, encode_png, eye_line_angle
from facecraft.pipeline.decode import MAX_INPUT_PIXELS, decode_image
from facecraft.pipeline.detect import find_scored_faces, landmarks_for_box
from facecraft.pipeline.errors import (
    INVALID_IMAGE,
    INVALID_OPTION,
    MODEL_UNAVAILABLE,
    NO_FACE_DETECTED,
    NO_SOURCE_FACE,
    PipelineError,
)
from facecraft.pipeline.segment import alpha_from_map, prepare_segmentation

Tensors = Mapping[str, "np.ndarray | None"]
# A BLS call: (model name, input name -> array WITH the batch dimension, output names) -> outputs.
Infer = Callable[[str, Mapping[str, np.ndarray], tuple[str, ...]], Mapping[str, np.ndarray]]
JPEG_QUALITY = 95


# -- options ---------------------------------------------------------------------------------------


def read_options(processor_name: str, inputs: Tensors, step: str) -> dict[str, object]:
    """The processor's options from their optional tensors (absent → registry default), validated
    by the registry. Raises ``PipelineError(invalid_option, step, ...)`` naming the bad option."""
    processor = registry.get(processor_name)
    values: dict[str, object] = {}
    for option in processor.options:
        array = inputs.get(option.tensor) if option.tensor else None
        if array is None:
            continue
        flat = np.asarray(array).reshape(-1)
        expected = 3 if option.kind == "color" else 1
        if flat.size != expected:
            raise PipelineError(
                INVALID_OPTION, step, f"{option.name} must have {expected} value(s), got {flat.size}"
            )
        if option.kind == "color":
            values[option.name] = tuple(int(v) for v in flat)
        elif option.datatype == "BYTES":
            raw = flat[0]
            values[option.name] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        else:
            values[option.name] = flat[0].item()
    try:
        return processor.resolve(values)
    except registry.OptionError as error:
        raise PipelineError(INVALID_OPTION, step, str(error)) from None


def option_inputs(processor_name: str) -> tuple[str, ...]:
    """The option tensor names of a processor (the optional inputs of its steps)."""
    return tuple(o.tensor for o in registry.get(processor_name).options if o.tensor)


def _require(inputs: Tensors, name: str, step: str) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise PipelineError(
            INVALID_IMAGE if name in ("IMAGE", "RGB") else INVALID_OPTION, step, f"missing input {name}"
        )
    return value


# -- image helpers ---------------------------------------------------------------------------------


def decode_full(image: np.ndarray, step: str, background=(255, 255, 255)) -> np.ndarray:
    """BYTES [1] upload → HWC uint8 RGB at the input's full resolution (≤ ``MAX_INPUT_PIXELS``;
    alpha composited on ``background``). Raises ``PipelineError`` (invalid_image, image_too_large)."""
    from facecraft.pipeline.triton_adapter import first_bytes

    if np.asarray(image).size != 1:
        raise PipelineError(
            INVALID_IMAGE, step, f"IMAGE must hold one encoded image, got {np.asarray(image).size}"
        )
    return decode_image(first_bytes(image), background=background, max_side=MAX_INPUT_PIXELS).rgb


def encode_image(pixels: np.ndarray, fmt: str) -> bytes:
    """HWC uint8 RGB / RGBA or HW uint8 gray → PNG or JPEG (quality 95) bytes. JPEG refuses alpha."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[1 if pixels.ndim == 2 else pixels.shape[2]]
    if fmt == "jpeg" and mode == "RGBA":
        raise PipelineError(INVALID_OPTION, "encode", "format=jpeg has no alpha: set background or mask_only")
    if fmt == "png" and mode == "RGBA":
        return encode_png(pixels)
    buffer = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(pixels, mode).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(pixels, mode).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# -- faces: decode + every face --------------------------------------------------------------------


def detect_all_faces(
    rgb: np.ndarray, max_faces: int, min_face_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every face of an HWC uint8 RGB image: (boxes float32 [N, 4] x, y, w, h; scores float32 [N];
    landmarks float32 [N, 68, 2] x, y; faces found before the ``max_faces`` cut), largest first
    then left to right (``detect.find_scored_faces``), faces smaller than ``min_face_size`` px
    dropped, at most ``max_faces`` kept. Raises ``PipelineError(no_face_detected, "faces", ...)``."""
    found = [(box, score) for box, score in find_scored_faces(rgb) if min(box[2], box[3]) >= min_face_size]
    if not found:
        h, w = rgb.shape[:2]
        smallest = f" of at least {min_face_size} px" if min_face_size else ""
        raise PipelineError(NO_FACE_DETECTED, "faces", f"no face{smallest} found in a {w}x{h} image")
    kept = found[:max_faces]
    boxes = np.array([box for box, _ in kept], dtype=np.float32).reshape(-1, 4)
    scores = np.array([score for _, score in kept], dtype=np.float32)
    landmarks = np.stack([landmarks_for_box(rgb, box) for box, _ in kept]).astype(np.float32)
    return boxes, scores, landmarks, len(found)


FACES_INPUTS = ("IMAGE", "MAX_FACES", "MIN_FACE_SIZE")


def faces_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """IMAGE BYTES [1], MAX_FACES, MIN_FACE_SIZE → RGB (full resolution), FACE_BOXES [N, 4],
    FACE_SCORES [N], FACE_LANDMARKS [N, 68, 2], FACE_COUNT [1] (faces found, before ``max_faces``).

    ``max_faces`` and ``min_face_size`` have the same definition in face_enhancer and face_analyser."""
    options = read_options("face_analyser", inputs, "faces")
    rgb = decode_full(_require(inputs, "IMAGE", "faces"), "faces")
    boxes, scores, landmarks, found = detect_all_faces(rgb, options["max_faces"], options["min_face_size"])
    return {
        "RGB": rgb,
        "FACE_BOXES": boxes,
        "FACE_SCORES": scores,
        "FACE_LANDMARKS": landmarks,
        "FACE_COUNT": np.array([found], dtype=np.int32),
    }


# -- face_enhance (BLS → codeformer) ---------------------------------------------------------------

CODEFORMER = "codeformer"


def restore_in_batches(faces: np.ndarray, fidelity: float, infer: Infer, max_batch: int) -> np.ndarray:
    """CodeFormer on [N, 3, 512, 512] float32 faces in [-1, 1] → the same shape, in as few calls
    as ``max_batch`` allows (one call when N ≤ ``max_batch``: the faces reach the model as one batch)."""
    restored = []
    step = max(1, int(max_batch))
    for start in range(0, len(faces), step):
        chunk = np.ascontiguousarray(faces[start : start + step], dtype=np.float32)
        weights = np.full((len(chunk), 1), fidelity, dtype=np.float32)
        outputs = infer(CODEFORMER, {"input": chunk, "w": weights}, ("output",))
        restored.append(np.asarray(outputs["output"], dtype=np.float32))
    return np.concatenate(restored)


def enhance_faces(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    fidelity: float,
    blend: float,
    infer: Infer,
    max_batch: int,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    """Every face of HWC uint8 RGB ``rgb`` (landmarks float32 [N, 68, 2]) aligned on the FFHQ 512
    template (``align.prepare_face``), restored by CodeFormer as one batch (``restore_in_batches``)
    and pasted back with the feathered mask (``align.paste_back``), one after the other, largest
    first; ``blend`` in 0..1 mixes each restored face with the input. Same shape and dtype as ``rgb``.

    ``canvas``: paste into this image instead, an upscaled ``rgb`` (``background_enhance``); the
    faces are cut from ``rgb`` and placed at the canvas's scale."""
    prepared = [prepare_face(rgb, points) for points in np.asarray(landmarks, dtype=np.float32)]
    faces = np.stack([face for face, _ in prepared])
    restored = restore_in_batches(faces, fidelity, infer, max_batch)
    result = rgb if canvas is None else canvas
    scale = result.shape[1] / rgb.shape[1]
    for (_, affine), output in zip(prepared, restored, strict=True):
        placed = affine.copy()
        placed[:, :2] /= scale  # crop = A (x / scale) + t for canvas pixels x
        pasted = paste_back(result, from_network(output), placed)
        if blend < 1.0:
            mixed = pasted.astype(np.float32) * blend + result.astype(np.float32) * (1.0 - blend)
            pasted = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        result = pasted
    return result


FACE_ENHANCE_INPUTS = ("RGB", "FACE_LANDMARKS", "FIDELITY", "BLEND", "BACKGROUND_ENHANCE", "FORMAT")
BACKGROUND_UPSCALER = registry.FRAME_ENHANCER_MODELS["2"]  # CodeFormer's background upsampler


def face_enhance_stage(inputs: Tensors, infer: Infer, max_batch: int) -> dict[str, np.ndarray]:
    """RGB, FACE_LANDMARKS [N, 68, 2], FIDELITY, BLEND, FORMAT → OUTPUT BYTES [1] (PNG or JPEG of
    the input's size), OUTPUT_SIZE INT32 [2] (w, h)."""
    from facecraft.pipeline.triton_adapter import bytes_tensor

    options = read_options("face_enhancer", inputs, "face_enhance")
    rgb = np.ascontiguousarray(_require(inputs, "RGB", "face_enhance"), dtype=np.uint8)
    landmarks = np.asarray(_require(inputs, "FACE_LANDMARKS", "face_enhance"), dtype=np.float32)
    if landmarks.size == 0:
        raise PipelineError(NO_FACE_DETECTED, "face_enhance", "no face to enhance")
    canvas = None
    if options["background_enhance"]:
        from facecraft.pipeline.tiles import enhance_frame

        upscale = upscaler(BACKGROUND_UPSCALER, infer, max_batch, "background_enhance", "face_enhance")
        canvas = enhance_frame(rgb, upscale, scale=2)
    enhanced = enhance_faces(
        rgb, landmarks.reshape(-1, 68, 2), options["fidelity"], options["blend"], infer, max_batch, canvas
    )
    return {
        "OUTPUT": bytes_tensor(encode_image(enhanced, options["format"])),
        "OUTPUT_SIZE": np.array([enhanced.shape[1], enhanced.shape[0]], dtype=np.int32),
    }


# -- face_analyse ----------------------------------------------------------------------------------


def analyse_faces(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, found: int) -> dict:
    """The face_analyser JSON: ``{"faces": [{"box": [x, y, w, h], "score", "landmarks": 68 × [x, y],
    "roll"}...], "face_count"}``, pixels of the input image; ``roll`` is the eye line's angle in
    degrees (y down, positive = the right eye of the image lower); ``face_count`` counts the faces
    found, ``faces`` holds at most ``max_faces`` of them."""
    faces = []
    for box, score, points in zip(boxes, scores, landmarks, strict=True):
        faces.append(
            {
                "box": [round(float(v), 1) for v in box],
                "score": round(float(score), 4),
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in points],
                "roll": round(eye_line_angle(points), 2),
            }
        )
    return {"faces": faces, "face_count": int(found)}


def annotate(rgb: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of HWC uint8 RGB with each face box (green) and its 68 landmarks (red) drawn."""
    canvas = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(max(rgb.shape[:2]) / 500))
    for box, points in zip(boxes, landmarks, strict=True):
        x, y, w, h = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 0), thickness)
        for px, py in points:
            cv2.circle(canvas, (int(round(float(px))), int(round(float(py)))), thickness + 1, (255, 0, 0), -1)
    return canvas


FACE_ANALYSE_INPUTS = ("RGB", "FACE_BOXES", "FACE_SCORES", "FACE_LANDMARKS", "FACE_COUNT", "ANNOTATE")


def face_analyse_stage(inputs: Tensors) -> dict[str, np.ndarray]:
    """RGB, FACE_BOXES, FACE_SCORES, FACE_LANDMARKS, FACE_COUNT, ANNOTATE → JSON BYTES [1] (UTF-8),
    ANNOTATED BYTES [1] (PNG; empty unless ANNOTATE)."""
    from facecraft.pipeline.triton_adapter import bytes_tensor

    options = read_options("face_analyser", inputs, "face_analyse")
    boxes = np.asarray(_require(inputs, "FACE_BOXES", "face_analyse"), dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(_require(inputs, "FACE_SCORES", "face_analyse"), dtype=np.float32).reshape(-1)
    landmarks = np.asarray(_require(inputs, "FACE_LANDMARKS", "face_analyse"), dtype=np.float32).reshape(
        -1, 68, 2
    )
    found = int(np.asarray(_require(inputs, "FACE_COUNT", "face_analyse")).reshape(-1)[0])
    report = analyse_faces(boxes, scores, landmarks, found)
    annotated = b""
    if options["annotate"]:
        rgb = np.ascontiguousarray(_require(inputs, "RGB", "face_analyse"), dtype=np.uint8)
        annotated = encode_image(annotate(rgb, boxes, landmarks), "png")
    return {
        "JSON": bytes_tensor(json.dumps(report).encode("utf-8")),
        "ANNOTATED": bytes_tensor(annotated),
    }


# -- background_remove (BLS → the requested U²-Net) ------------------------------------------------


def cut_out(rgb: np.ndarray, alpha: np.ndarray, background, mask_only: bool, fmt: str) -> bytes:
    """Encode the background-removal result: ``alpha`` float32 [h, w] in [0, 1] over HWC uint8 RGB.

    ``mask_only``: the alpha as a grayscale image; ``background`` (R, G, B): the image over that
    colour; otherwise RGBA (PNG only)."""
    alpha8 = np.rint(np.clip(alpha, 0.0, 1.0) * 255).astype(np.uint8)
    if mask_only:
        return encode_image(alpha8, fmt)
    rgba = np.dstack([rgb, alpha8])
    if background is not None:
        return encode_image(composite_on_background(rgba, tuple(background)), fmt)
    return encode_image(rgba, fmt)


def unavailable_model_error(
    wanted: str, triton_model: str, detail: str, step: str = "background_remove"
) -> PipelineError:
    """``model_unavailable`` for a model Triton does not serve (not exported/loaded); ``wanted``
    names what asked for it (an option such as ``model=u2netp``, or a processor)."""
    return PipelineError(
        MODEL_UNAVAILABLE,
        step,
        f"{wanted} needs the Triton model {triton_model}, which is not loaded ({detail}); load it with "
        f"POST /api/v1/models/{triton_model}/load, or export it first (`facecraft export {triton_model}` "
        "or POST /api/v1/models/download)",
    )


BACKGROUND_REMOVE_INPUTS = ("IMAGE", *option_inputs("background_remover"))


def background_remove_stage(inputs: Tensors, infer: Infer) -> dict[str, np.ndarray]:
    """IMAGE BYTES [1], SEG_MODEL, BACKGROUND, MASK_ONLY, FORMAT → OUTPUT BYTES [1], OUTPUT_SIZE [2].

    The segmentation model runs at 320×320 (``segment.prepare_segmentation``); its map is resized
    to the input's full resolution (``segment.alpha_from_map``). A model that is not loaded raises
    ``PipelineError(model_unavailable, ...)`` naming the Triton model."""
    from facecraft.pipeline.triton_adapter import bytes_tensor

    options = read_options("background_remover", inputs, "background_remove")  # incl. jpeg needs no alpha
    rgb = decode_full(_require(inputs, "IMAGE", "background_remove"), "background_remove")
    triton_model = registry.SEGMENTATION_MODELS[options["model"]]
    seg_input = prepare_segmentation(rgb)[np.newaxis]
    try:
        seg_map = infer(triton_model, {"input": seg_input}, ("output",))["output"]
    except PipelineError as error:
        if error.code == MODEL_UNAVAILABLE:
            raise unavailable_model_error(f"model={options['model']}", triton_model, error.detail) from None
        raise
    alpha = alpha_from_map(np.asarray(seg_map)[0], (rgb.shape[1], rgb.shape[0]))
    data = cut_out(rgb, alpha, options["background"], options["mask_only"], options["format"])
    return {
        "OUTPUT": bytes_tensor(data),
        "OUTPUT_SIZE": np.array([rgb.shape[1], rgb.shape[0]], dtype=np.int32),
    }


# -- enhance_frame (BLS → realesrgan_x4plus / realesrgan_x2plus) -----------------------------------

ENHANCE_FRAME_INPUTS = ("IMAGE", *option_inputs("frame_enhancer"))


def upscale_in_batches(model: str, tiles: np.ndarray, infer: Infer, max_batch: int) -> np.ndarray:
    """Real-ESRGAN on the [N, 3, h, w] float32 tiles of one image, in as few calls as ``max_batch``
    allows (one call when N ≤ ``max_batch``)."""
    step = max(1, int(max_batch))
    outputs = []
    for start in range(0, len(tiles), step):
        chunk = np.ascontiguousarray(tiles[start : start + step], dtype=np.float32)
        outputs.append(np.asarray(infer(model, {"input": chunk}, ("output",))["output"], dtype=np.float32))
    return np.concatenate(outputs)


def upscaler(
    model: str, infer: Infer, max_batch: int, option: str, step: str
) -> Callable[[np.ndarray], np.ndarray]:
    """``tiles → upscaled tiles`` through ``model`` (``upscale_in_batches``); a model Triton does
    not serve becomes ``model_unavailable`` naming ``option`` and the model."""

    def upscale(tiles: np.ndarray) -> np.ndarray:
        try:
            return upscale_in_batches(model, tiles, infer, max_batch)
        except PipelineError as error:
            if error.code == MODEL_UNAVAILABLE:
                raise unavailable_model_error(option, model, error.detail, step) from None
            raise

    return upscale


def enhance_frame_stage(inputs: Tensors, infer: Infer, max_batch: int) -> dict[str, np.ndarray]:
    """IMAGE BYTES [1], SCALE, TILE, OVERLAP, FORMAT → OUTPUT BYTES [1] (PNG or JPEG exactly
    scale × the input size), OUTPUT_SIZE INT32 [2] (w, h of the output).

    Options and the pixel caps are checked before any model call (``tiles.enhance_frame``); a
    Real-ESRGAN model that is not loaded raises ``PipelineError(model_unavailable, ...)``."""
    from facecraft.pipeline.tiles import enhance_frame
    from facecraft.pipeline.triton_adapter import bytes_tensor

    options = read_options("frame_enhancer", inputs, "enhance_frame")
    rgb = decode_full(_require(inputs, "IMAGE", "enhance_frame"), "enhance_frame")
    scale = int(options["scale"])
    model = registry.FRAME_ENHANCER_MODELS[options["scale"]]

    upscale = upscaler(model, infer, max_batch, f"scale={scale}", "enhance_frame")
    enhanced = enhance_frame(rgb, upscale, scale=scale, tile=options["tile"], overlap=options["overlap"])
    return {
        "OUTPUT": bytes_tensor(encode_image(enhanced, options["format"])),
        "OUTPUT_SIZE": np.array([enhanced.shape[1], enhanced.shape[0]], dtype=np.int32),
    }


# -- face_swap (BLS → arcface_w600k_r50 once, inswapper_128 once for all target faces) -------------

ARCFACE = "arcface_w600k_r50"
SWAP_GENERATOR = "inswapper_128"
SOURCE_EMBEDDING = registry.get("face_swapper").identity.tensor
FACE_SWAP_INPUTS = ("SOURCE", "TARGET", SOURCE_EMBEDDING, *option_inputs("face_swapper"))


def _bls(model: str, inputs: Mapping[str, np.ndarray], infer: Infer, option: str) -> np.ndarray:
    """``infer(model, inputs, ("output",))["output"]``; a model Triton does not serve becomes
    ``model_unavailable`` of ``face_swap`` naming it."""
    try:
        return np.asarray(infer(model, inputs, ("output",))["output"], dtype=np.float32)
    except PipelineError as error:
        if error.code == MODEL_UNAVAILABLE:
            raise unavailable_model_error(option, model, error.detail, "face_swap") from None
        raise


def source_face_landmarks(source: np.ndarray, source_face: int) -> np.ndarray:
    """dlib 68 landmarks float32 [68, 2] of the ``source_face``-th face (largest first) of HWC
    uint8 RGB ``source``. Raises ``PipelineError(no_source_face, ...)`` when it has no face, or
    fewer than ``source_face`` + 1."""
    try:
        _, _, source_faces, _ = detect_all_faces(source, source_face + 1, 0)
    except PipelineError as error:
        raise PipelineError(NO_SOURCE_FACE, "face_swap", f"source: {error.detail}") from None
    if len(source_faces) <= source_face:
        raise PipelineError(
            NO_SOURCE_FACE, "face_swap", f"source_face={source_face} but the source has {len(source_faces)}"
        )
    return source_faces[source_face]


def source_embedding(source: np.ndarray, landmarks: np.ndarray, infer: Infer) -> np.ndarray:
    """The identity of the face at ``landmarks`` in HWC uint8 RGB ``source``: aligned on the
    ArcFace 112 template and embedded by ``arcface_w600k_r50`` (one BLS call) → float32 [512]
    (ArcFace's raw output). Raises ``PipelineError(model_unavailable, ...)``."""
    from facecraft.pipeline import swap

    crop = swap.arcface_input(source, landmarks)[np.newaxis]
    return _bls(ARCFACE, {"input": crop}, infer, "face_swapper")[0]


def _given_embedding(array: np.ndarray) -> np.ndarray:
    embedding = np.asarray(array, dtype=np.float32).reshape(-1)
    if embedding.shape != (512,) or not np.all(np.isfinite(embedding)) or not np.any(embedding):
        raise PipelineError(
            INVALID_OPTION, "face_swap", f"{SOURCE_EMBEDDING} must be 512 finite values, not all 0"
        )
    return embedding


def face_swap_stage(
    inputs: Tensors, infer: Infer, emap: Callable[[], np.ndarray], max_batch: int, codeformer_batch: int = 1
) -> dict[str, np.ndarray]:
    """SOURCE BYTES [1] or SOURCE_EMBEDDING FP32 [512], TARGET BYTES [1], SOURCE_FACE,
    TARGET_FACE, ENHANCE, MAX_FACES, FORMAT → OUTPUT BYTES [1] (PNG or JPEG of the target's size),
    OUTPUT_SIZE INT32 [2] (w, h), FACE_COUNT INT32 [1] (target faces swapped). ``max_batch`` /
    ``codeformer_batch``: the served max_batch_size of inswapper_128 / codeformer (larger face
    counts go in chunks).

    The source identity (its ``source_face``-th face, largest first) is embedded once by
    ``arcface_w600k_r50`` (:func:`source_embedding`) — or given as SOURCE_EMBEDDING, computed
    once per job by the ``face_swapper_source`` ensemble (SOURCE without TARGET → SOURCE_EMBEDDING
    only), so a video's frames never re-embed it — and turned into the generator latent with
    ``emap()`` (float32 [512, 512], ``swap.read_emap``); every chosen target face goes to
    ``inswapper_128`` in one call (``swap.swap_faces``), then, with ``enhance``, through
    CodeFormer (``enhance_faces``). Raises ``PipelineError``: ``no_source_face`` (no face in
    SOURCE, or fewer than ``source_face`` + 1), ``no_face_detected`` (same for TARGET /
    ``target_face``), ``invalid_option`` (both or neither of SOURCE and SOURCE_EMBEDDING, a bad
    embedding), ``model_unavailable`` (a swap model or CodeFormer not loaded)."""
    from facecraft.pipeline import swap
    from facecraft.pipeline.triton_adapter import bytes_tensor

    options = read_options("face_swapper", inputs, "face_swap")
    given = inputs.get(SOURCE_EMBEDDING)
    if (inputs.get("SOURCE") is None) == (given is None):
        raise PipelineError(INVALID_OPTION, "face_swap", f"give SOURCE or {SOURCE_EMBEDDING}, exactly one")
    embedding = None if given is None else _given_embedding(given)
    source = None if given is not None else decode_full(inputs["SOURCE"], "face_swap")
    if inputs.get("TARGET") is None:  # the face_swapper_source ensemble: the identity alone
        if source is None:
            raise PipelineError(INVALID_IMAGE, "face_swap", "missing input TARGET")
        landmarks = source_face_landmarks(source, options["source_face"])
        return {SOURCE_EMBEDDING: source_embedding(source, landmarks, infer)}
    target = decode_full(inputs["TARGET"], "face_swap")
    # both faceless cases (source first: its own code) are found before any model call
    landmarks = None if source is None else source_face_landmarks(source, options["source_face"])
    _, _, target_faces, _ = detect_all_faces(target, options["max_faces"], 0)
    chosen = options["target_face"]
    if chosen >= 0:
        if chosen >= len(target_faces):
            raise PipelineError(
                NO_FACE_DETECTED, "face_swap", f"target_face={chosen} but the target has {len(target_faces)}"
            )
        target_faces = target_faces[chosen : chosen + 1]
    if embedding is None:
        embedding = source_embedding(source, landmarks, infer)
    try:
        matrix = emap()
    except (OSError, ValueError) as error:
        raise unavailable_model_error("face_swapper", SWAP_GENERATOR, str(error), "face_swap") from None
    latent = swap.source_latent(embedding, matrix)

    def generate(targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
        step = max(1, int(max_batch))
        return np.concatenate(
            [
                _bls(SWAP_GENERATOR, {"target": targets[i : i + step], "source": sources[i : i + step]},
                     infer, "face_swapper")
                for i in range(0, len(targets), step)
            ]
        )  # fmt: skip

    result = swap.swap_faces(target, list(target_faces), latent, generate)
    if options["enhance"]:
        result = enhance_faces(result, target_faces, registry.FIDELITY.default, 1.0, infer, codeformer_batch)
    return {
        "OUTPUT": bytes_tensor(encode_image(result, options["format"])),
        "OUTPUT_SIZE": np.array([result.shape[1], result.shape[0]], dtype=np.int32),
        "FACE_COUNT": np.array([len(target_faces)], dtype=np.int32),
    }
