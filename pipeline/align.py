"""Face alignment for CodeFormer: 68 landmarks → FFHQ 512 template, network (de)normalisation,
and pasting the restored face back with a feathered mask."""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512
# FFHQ 512×512 template: left eye, right eye, nose tip, left mouth corner, right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
# Border fill of the warped crop (the value facexlib uses), so the network sees no hard black edge.
BORDER_RGB = (135, 133, 132)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """float32 [5, 2] from dlib's 68: eye centres (mean 36–41, 42–47), nose tip 30, mouth 48, 54."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    return np.stack(
        [points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]]
    ).astype(np.float32)


def estimate_alignment(landmarks: np.ndarray) -> np.ndarray:
    """Similarity transform (float32 [2, 3]) mapping image pixels onto the 512 template (LMEDS)."""
    matrix, _ = cv2.estimateAffinePartial2D(five_points(landmarks), FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("could not estimate the face alignment from the landmarks")
    return matrix.astype(np.float32)


def warp_face(rgb: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The aligned 512×512 HWC uint8 RGB face crop."""
    return cv2.warpAffine(
        rgb,
        np.asarray(affine, dtype=np.float64),
        (FACE_SIZE, FACE_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_RGB,
    )


def to_network(face_rgb: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB → CHW float32 in [-1, 1] ((x/255 - 0.5) / 0.5), CodeFormer's input."""
    scaled = (face_rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


def from_network(output: np.ndarray) -> np.ndarray:
    """CHW float32 network output (nominal [-1, 1]) → clamp → (y + 1) / 2 · 255 → HWC uint8 RGB."""
    clamped = np.clip(np.asarray(output, dtype=np.float32), -1.0, 1.0)
    scaled = (clamped.transpose(1, 2, 0) + 1.0) / 2.0 * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def prepare_face(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FACE_INPUT CHW float32 [3, 512, 512] in [-1, 1], AFFINE float32 [2, 3]) for one image."""
    affine = estimate_alignment(landmarks)
    return to_network(warp_face(rgb, affine)), affine


def paste_back(rgb: np.ndarray, restored_face: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Blend a restored 512×512 HWC uint8 face into the HWC uint8 RGB image it was cut from.

    The face is warped back with the inverse transform; the blend mask is the warped square,
    eroded and Gaussian-blurred in proportion to the face size so no seam shows.
    """
    h, w = rgb.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
    face_back = cv2.warpAffine(restored_face, inverse, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(
        np.ones((FACE_SIZE, FACE_SIZE), np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR
    )
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    edge = int(np.sqrt(float(mask.sum()))) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
    mask = mask[:, :, None]
    blended = face_back.astype(np.float32) * mask + rgb.astype(np.float32) * (1.0 - mask)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def restore_face(rgb: np.ndarray, network_output: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``ENHANCED``: the image with CodeFormer's CHW float32 output pasted back (HWC uint8 RGB)."""
    return paste_back(rgb, from_network(network_output), affine)
