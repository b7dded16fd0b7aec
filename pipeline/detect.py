"""Face detection (dlib HOG) and 68-point landmarks (dlib shape predictor)."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecraft.pipeline.errors import NO_FACE_DETECTED, PipelineError

STEP = "detect"

# HOG runs on a copy whose long side is at most this; full-resolution HOG costs ~250 ms/MP.
DETECTION_MAX_SIDE = 800
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# HOG SVM score (dlib default threshold 0); real frontal faces here score ~0.5-2.5.
CONFIDENT_SCORE = 0.25


@dataclass(frozen=True)
class Detection:
    """``landmarks``: float32 [68, 2] (x, y) and ``box``: float32 [4] (x, y, w, h), both in the
    pixels of the image given to :func:`detect_face`; ``face_count``: faces found."""

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


def find_faces(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """All frontal faces in an HWC uint8 RGB image as (x, y, w, h) in its pixels, largest first.

    HOG runs on a copy downscaled to ≤ 800 px long side (upsample 0); when that finds nothing it
    retries with one upsampling step, which catches faces down to ~40 px in the copy. Detections
    scoring below ``CONFIDENT_SCORE`` (HOG false positives on hands, fabric...) are dropped when
    a confident one exists, so a large false positive cannot beat the real face.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECTION_MAX_SIDE / max(h, w))
    small = (
        rgb
        if scale == 1.0
        else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )
    small = np.ascontiguousarray(small)
    detector = _face_detector()
    rects, scores, _ = detector.run(small, 0, 0.0)
    if len(rects) == 0:
        rects, scores, _ = detector.run(small, 1, 0.0)
    found = list(zip(rects, scores, strict=True))
    if any(score >= CONFIDENT_SCORE for _, score in found):
        found = [(rect, score) for rect, score in found if score >= CONFIDENT_SCORE]
    boxes = [(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale) for r, _ in found]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def landmarks_for_box(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """68 landmarks (float32 [68, 2], x, y) for a face box (x, y, w, h) on the full-resolution image."""
    import dlib

    x, y, w, h = box
    rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    shape = _shape_predictor()(np.ascontiguousarray(rgb), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def detect_face(rgb: np.ndarray) -> Detection:
    """The largest frontal face of an HWC uint8 RGB image with its landmarks.

    Raises ``PipelineError(no_face_detected, "detect", ...)`` when there is none.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect_face expects HWC uint8 RGB, got {rgb.dtype} {rgb.shape}")
    boxes = find_faces(rgb)
    if not boxes:
        h, w = rgb.shape[:2]
        raise PipelineError(NO_FACE_DETECTED, STEP, f"no face found in a {w}x{h} image")
    box = boxes[0]
    return Detection(
        landmarks=landmarks_for_box(rgb, box),
        box=np.array(box, dtype=np.float32),
        face_count=len(boxes),
    )
