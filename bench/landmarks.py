"""Landmark accuracy of detect + landmarks on dlib's annotated faces (issue #12).

The reference is ``data/dlib_face_landmarks.json``: dlib's ``examples/faces/
{training,testing}_with_face_landmarks.xml`` for the nine PASCAL VOC photos of
``../shared/data/faces`` (43 faces: hand-drawn boxes, 68 points in the iBUG 300-W scheme). dlib's XML
says its points were made by ``shape_predictor_68_face_landmarks.dat`` on the annotated boxes, so the
error measures what our *detected* box (and any change to the detection) does to the landmarks of
the same model, not its error against human annotation.

Error per face: the normalised mean error (NME) of 300-W, the mean point-to-point distance over the
68 points divided by the inter-ocular distance (outer eye corners, points 36 and 45; Sagonas et al.,
"300 Faces In-the-Wild Challenge", 2013).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ANNOTATIONS = Path(__file__).resolve().parent / "data" / "dlib_face_landmarks.json"
# An annotated face is found when a detected box overlaps it by at least this IoU.
MATCH_IOU = 0.3
OUTER_EYE_CORNERS = (36, 45)


def load_annotations(path: Path = ANNOTATIONS) -> dict[str, list[dict]]:
    """photo name (as in ../shared/data/faces) → faces: {"box": [x, y, w, h] px, "landmarks": [68, 2] px}."""
    return {name: image["faces"] for name, image in json.loads(path.read_text())["images"].items()}


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nme(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Mean point distance of two [68, 2] landmark sets over the reference's inter-ocular distance."""
    reference = np.asarray(reference, np.float64)
    ocular = np.linalg.norm(reference[OUTER_EYE_CORNERS[0]] - reference[OUTER_EYE_CORNERS[1]])
    return float(np.linalg.norm(np.asarray(predicted, np.float64) - reference, axis=1).mean() / ocular)


def evaluate(faces_dir: Path, channels: str | None = None) -> dict:
    """Detect (``find_scored_faces`` with ``channels``, default the pipeline's) and landmark every
    annotated photo in ``faces_dir``: per photo the faces detected and annotated faces matched
    (IoU ≥ ``MATCH_IOU``), and the NME of each matched face (landmarks from the detected box, at
    full resolution). Photos missing from ``faces_dir`` are skipped (listed in ``missing``)."""
    from facecraft.pipeline.decode import decode_image
    from facecraft.pipeline.detect import DETECTION_CHANNELS, find_faces, landmarks_for_box

    channels = channels or DETECTION_CHANNELS
    photos, errors, missing = [], [], []
    for name, annotated in load_annotations().items():
        path = faces_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        rgb = decode_image(path.read_bytes()).rgb
        boxes = find_faces(rgb, channels)
        matched = 0
        for face in annotated:
            overlaps = [box_iou(face["box"], box) for box in boxes]
            if overlaps and max(overlaps) >= MATCH_IOU:
                box = boxes[int(np.argmax(overlaps))]
                errors.append(nme(landmarks_for_box(rgb, box), np.array(face["landmarks"])))
                matched += 1
        photos.append(
            {"photo": name, "detected": len(boxes), "annotated": len(annotated), "matched": matched}
        )
    annotated_total = sum(p["annotated"] for p in photos)
    return {
        "channels": channels,
        "photos": photos,
        "missing": missing,
        "faces_annotated": annotated_total,
        "faces_matched": len(errors),
        "nme_mean": float(np.mean(errors)) if errors else None,
        "nme_median": float(np.median(errors)) if errors else None,
        "nme_max": float(np.max(errors)) if errors else None,
    }
