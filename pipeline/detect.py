"""Face detection (dlib HOG) and 68-point landmarks (dlib shape predictor)."""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecraft.pipeline.errors import NO_FACE_DETECTED, PipelineError

STEP = "detect"

# HOG runs once, with one upsampling step (x2), on a copy of at most this many pixels (an 800x800
# copy): the searched image is then at most 2.56 MP, which bounds the cost (HOG ~250 ms/MP).
DETECTION_MAX_PIXELS = 640_000
DETECTION_UPSAMPLE = 1
# dlib's frontal detector scans an 80x80 window: the smallest face box it returns is ~80 px in the
# searched image, i.e. ~40 px in the copy after one upsampling step.
SMALLEST_FACE_IN_COPY = 80 / 2**DETECTION_UPSAMPLE
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# HOG SVM score (dlib default threshold 0); real frontal faces here score ~0.5-2.5.
CONFIDENT_SCORE = 0.25
# What HOG searches: "rgb" (dlib takes the strongest of the three channels' gradients) or "gray"
# (one luma channel, BT.601 as cv2.COLOR_RGB2GRAY: ~1.2-1.5x less work, `facecraft bench-steps`).
# RGB stays the default: the luma scores real faces ~0.9x lower, so CONFIDENT_SCORE (calibrated on
# RGB) let a 0.26 false positive larger than the face through on the 15-degree rotated astronaut
# (tests/pipeline/test_compose.py), and "largest face wins" then levelled the wrong box; no single
# threshold separated it from the weakest real luma face (0.29) with a margin (docs/pipeline.md).
DETECTION_CHANNELS = "rgb"


@dataclass(frozen=True)
class Detection:
    """``landmarks``: float32 [68, 2] (x, y) and ``box``: float32 [4] (x, y, w, h), both in the
    pixels of the image given to :func:`detect_face`; ``face_count``: faces found (≥ 1, every face
    of at least :func:`min_face_size`, the largest is ``box``)."""

    landmarks: np.ndarray
    box: np.ndarray
    face_count: int


def models_dir() -> Path:
    """The ``models/`` folder of the ``face_recognition_models`` package, found without importing it
    (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the face-recognition-models package is not installed (pip install face-recognition-models)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.lru_cache(maxsize=1)
def _face_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    import dlib

    path = models_dir() / LANDMARKS_FILE
    if not path.is_file():
        raise RuntimeError(f"dlib landmark model not found at {path}")
    return dlib.shape_predictor(str(path))


def load_models() -> None:
    """Load (and cache) the detector and the landmark predictor, e.g. at model start-up."""
    _face_detector()
    _shape_predictor()


def detection_scale(width: int, height: int) -> float:
    """The factor (0, 1] by which a ``width`` x ``height`` image is shrunk for HOG (1: searched as is)."""
    return min(1.0, math.sqrt(DETECTION_MAX_PIXELS / (width * height)))


def min_face_size(width: int, height: int) -> float:
    """The smallest face (box side, px) :func:`find_faces` searches for in a ``width`` x ``height``
    image: 40 px up to 0.64 MP, above that 1/20 of sqrt(width * height) (e.g. 72 px at 1920x1080,
    84 px at 2048x1365, 102 px at 2048x2048); dlib's boxes at that scale measure ~0.9-1x of it."""
    return SMALLEST_FACE_IN_COPY / detection_scale(width, height)


def find_scored_faces(
    rgb: np.ndarray, channels: str = DETECTION_CHANNELS
) -> list[tuple[tuple[float, float, float, float], float]]:
    """Every frontal face in an HWC uint8 RGB image as ((x, y, w, h) in its pixels, HOG score), in a
    deterministic order: largest box first, equal sizes left to right (then top to bottom).

    One HOG pass with one upsampling step on a copy of ≤ ``DETECTION_MAX_PIXELS`` (the image itself
    when it is smaller; ``INTER_AREA`` otherwise): it finds faces from :func:`min_face_size` up to
    the whole image. HOG searches the copy's RGB (``channels="rgb"``, the default) or its luma
    (``"gray"``, cheaper, measured and not adopted: see ``DETECTION_CHANNELS``). Detections scoring below ``CONFIDENT_SCORE`` (HOG false positives on hands,
    badges, fabric...) are dropped when a confident one exists, so such a false positive can neither
    beat the real face nor add to the count; a lone weak detection is kept. The score is dlib's SVM
    margin (0 = its threshold; real frontal faces here score ~0.5-2.5).

    Raises ``ValueError`` for anything but a non-empty HWC uint8 RGB array or an unknown ``channels``.
    """
    if channels not in ("gray", "rgb"):
        raise ValueError(f"channels must be 'gray' or 'rgb', got {channels!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"face detection expects non-empty HWC uint8 RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    scale = detection_scale(w, h)
    small = (
        rgb
        if scale == 1.0
        else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )
    if channels == "gray":
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    rects, scores, _ = _face_detector().run(np.ascontiguousarray(small), DETECTION_UPSAMPLE, 0.0)
    found = list(zip(rects, scores, strict=True))
    if any(score >= CONFIDENT_SCORE for _, score in found):
        found = [(rect, score) for rect, score in found if score >= CONFIDENT_SCORE]
    scored = [
        ((r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale), float(score))
        for r, score in found
    ]
    return sorted(scored, key=lambda item: (-item[0][2] * item[0][3], item[0][0], item[0][1]))


def find_faces(
    rgb: np.ndarray, channels: str = DETECTION_CHANNELS
) -> list[tuple[float, float, float, float]]:
    """The boxes of :func:`find_scored_faces` (same order, same errors)."""
    return [box for box, _ in find_scored_faces(rgb, channels)]


def landmarks_for_box(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """68 landmarks (float32 [68, 2], x, y) for a face box (x, y, w, h) on the full-resolution image."""
    import dlib

    x, y, w, h = box
    rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    shape = _shape_predictor()(np.ascontiguousarray(rgb), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def detect_face(rgb: np.ndarray, channels: str = DETECTION_CHANNELS) -> Detection:
    """The largest frontal face of an HWC uint8 RGB image with its landmarks (computed on ``rgb`` at
    full resolution), and the number of faces :func:`find_faces` sees: every face whose box side is
    at least :func:`min_face_size` (40 px up to 0.64 MP, 1/20 of sqrt(W * H) above).

    ``channels``: what HOG searches (:func:`find_scored_faces`). Raises ``ValueError`` for anything
    but a non-empty HWC uint8 RGB array, and ``PipelineError(no_face_detected, "detect", ...)`` when there is no face.
    """
    boxes = find_faces(rgb, channels)
    if not boxes:
        h, w = rgb.shape[:2]
        raise PipelineError(NO_FACE_DETECTED, STEP, f"no face found in a {w}x{h} image")
    box = boxes[0]
    return Detection(
        landmarks=landmarks_for_box(rgb, box),
        box=np.array(box, dtype=np.float32),
        face_count=len(boxes),
    )
