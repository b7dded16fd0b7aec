import cv2
import numpy as np

from facecraft.pipeline.align import (
    FFHQ_TEMPLATE_512,
    estimate_alignment,
    five_points,
    from_network,
    paste_back,
    prepare_face,
    restore_face,
    to_network,
    warp_face,
)
from facecraft.pipeline.detect import detect_face


def landmarks_from_five(points: np.ndarray) -> np.ndarray:
    """68 synthetic landmarks whose five-point summary is ``points``."""
    landmarks = np.zeros((68, 2), np.float32)
    landmarks[36:42] = points[0]
    landmarks[42:48] = points[1]
    landmarks[30] = points[2]
    landmarks[48] = points[3]
    landmarks[54] = points[4]
    return landmarks


def test_five_points_from_68():
    landmarks = np.arange(136, dtype=np.float32).reshape(68, 2)
    points = five_points(landmarks)
    assert np.allclose(points[0], landmarks[36:42].mean(0))
    assert np.allclose(points[1], landmarks[42:48].mean(0))
    assert np.allclose(points[2:], landmarks[[30, 48, 54]])


def test_alignment_round_trip_maps_template_back_to_landmarks():
    # The template, scaled by 0.4, rotated 20 degrees and shifted: an exact similarity.
    rotation = cv2.getRotationMatrix2D((0, 0), 20, 0.4)
    points = (FFHQ_TEMPLATE_512 @ rotation[:, :2].T + (300, 150)).astype(np.float32)
    affine = estimate_alignment(landmarks_from_five(points))
    assert affine.shape == (2, 3) and affine.dtype == np.float32
    forward = FFHQ_TEMPLATE_512 * 0 + (np.c_[points, np.ones(5)] @ affine.T)
    assert np.allclose(forward, FFHQ_TEMPLATE_512, atol=0.5)
    inverse = cv2.invertAffineTransform(affine)
    back = np.c_[FFHQ_TEMPLATE_512, np.ones(5)] @ inverse.T
    assert np.allclose(back, points, atol=0.5)


def test_astronaut_alignment_puts_the_eyes_on_the_template(astronaut_rgb):
    landmarks = detect_face(astronaut_rgb).landmarks
    face_input, affine = prepare_face(astronaut_rgb, landmarks)
    assert face_input.shape == (3, 512, 512) and face_input.dtype == np.float32
    assert face_input.min() >= -1.0 and face_input.max() <= 1.0
    mapped = np.c_[five_points(landmarks), np.ones(5)] @ affine.T
    assert np.abs(mapped[:2] - FFHQ_TEMPLATE_512[:2]).max() < 20  # eyes within a few template px


def test_network_normalisation_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tensor = to_network(rgb)
    assert tensor.shape == (3, 16, 16)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert np.isclose(to_network(np.zeros((1, 1, 3), np.uint8)).min(), -1)
    assert np.isclose(to_network(np.full((1, 1, 3), 255, np.uint8)).max(), 1)
    assert np.array_equal(from_network(tensor), rgb)


def test_from_network_clamps_out_of_range_output():
    out = from_network(np.array([-3.0, 0.0, 5.0], np.float32).reshape(3, 1, 1))
    assert out.reshape(-1).tolist() == [0, 128, 255]


def test_paste_back_changes_only_the_face_region(astronaut_rgb):
    landmarks = detect_face(astronaut_rgb).landmarks
    affine = estimate_alignment(landmarks)
    white_face = np.full((512, 512, 3), 255, np.uint8)
    pasted = paste_back(astronaut_rgb, white_face, affine)
    changed = np.any(pasted != astronaut_rgb, axis=2)
    ys, xs = np.nonzero(changed)
    nose = landmarks[30]
    assert changed[int(nose[1]), int(nose[0])]
    assert np.all(pasted[int(nose[1]), int(nose[0])] == 255)
    assert xs.min() > 100 and xs.max() < 350 and ys.max() < 300  # far from the image corners
    assert not changed[500, 10]


def test_identity_restoration_is_nearly_lossless(astronaut_rgb):
    landmarks = detect_face(astronaut_rgb).landmarks
    face_input, affine = prepare_face(astronaut_rgb, landmarks)
    restored = restore_face(astronaut_rgb, face_input, affine)
    assert restored.shape == astronaut_rgb.shape
    assert np.abs(restored.astype(int) - astronaut_rgb).mean() < 1.0
    assert warp_face(astronaut_rgb, affine).shape == (512, 512, 3)
