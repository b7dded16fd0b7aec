"""Landmark accuracy of detect + landmarks on dlib's annotated faces (no timing asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.bench.landmarks import box_iou, evaluate, load_annotations, nme

# Measured at issue #12 with the pipeline's HOG on RGB: 42/43 faces matched (it misses a 37-px face
# of 2007_007763, which the luma search finds), NME mean 0.0198, max 0.082; the luma search (not
# adopted, see facecraft.pipeline.detect.DETECTION_CHANNELS) matched 43/43 at 0.0185 / 0.049.
NME_MEAN_BOUND = 0.021
NME_MAX_BOUND = 0.09
# The one annotated face the RGB search misses (photo, annotated, detected).
KNOWN_MISSES = {"dlib__2007_007763.jpg": (7, 6)}


def test_annotations_are_dlibs_68_point_faces_of_the_shared_pascal_photos():
    annotations = load_annotations()
    assert len(annotations) == 9 and sum(len(faces) for faces in annotations.values()) == 43
    assert all(
        np.array(face["landmarks"]).shape == (68, 2) for faces in annotations.values() for face in faces
    )


def test_nme_is_point_error_over_the_outer_eye_corner_distance():
    reference = np.zeros((68, 2))
    reference[45] = (40.0, 0.0)  # inter-ocular distance 40 px
    assert nme(reference, reference) == 0.0
    assert nme(reference + (4.0, 0.0), reference) == pytest.approx(0.1)
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_detection_finds_the_annotated_faces_with_a_bounded_landmark_error(faces_dir):
    result = evaluate(faces_dir)
    assert result["missing"] == []
    # every detection is an annotated face (no false positive), and every annotated face is found
    # but the known 37-px miss: the counts on the nine group photos are pinned
    for photo in result["photos"]:
        assert photo["detected"] == photo["matched"], photo
        annotated, detected = KNOWN_MISSES.get(photo["photo"], (photo["annotated"], photo["annotated"]))
        assert (photo["annotated"], photo["detected"]) == (annotated, detected), photo
    assert result["nme_mean"] < NME_MEAN_BOUND and result["nme_max"] < NME_MAX_BOUND
