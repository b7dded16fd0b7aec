"""Face alignment: 68 landmarks → 5 points → a similarity transform onto a template (FFHQ 512 for
CodeFormer; the ArcFace 112 and swap 128 templates in ``facecraft.pipeline.swap``), the warped
crop, CodeFormer's network (de)normalisation, and pasting a processed crop back with a mask."""

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


def estimate_alignment(landmarks: np.ndarray, template: np.ndarray = FFHQ_TEMPLATE_512) -> np.ndarray:
    """Similarity transform (float32 [2, 3]) mapping image pixels onto ``template`` (float32 [5, 2]
    in crop pixels; default the FFHQ 512 one), fitted to the 5 points of ``landmarks`` (LMEDS).

    Raises ``ValueError`` when no transform fits."""
    matrix, _ = cv2.estimateAffinePartial2D(five_points(landmarks), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("could not estimate the face alignment from the landmarks")
    return matrix.astype(np.float32)


def warp_face(
    rgb: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE, *, border_replicate: bool = False
) -> np.ndarray:
    """The aligned ``size``×``size`` HWC uint8 RGB face crop; outside the image it is filled with
    ``BORDER_RGB`` (CodeFormer) or, with ``border_replicate``, the nearest edge pixel."""
    border = cv2.BORDER_REPLICATE if border_replicate else cv2.BORDER_CONSTANT
    return cv2.warpAffine(
        rgb,
        np.asarray(affine, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=border,
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
    mask = cv2.warpAffine(
        np.ones((FACE_SIZE, FACE_SIZE), np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR
    )
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    edge = int(np.sqrt(float(mask.sum()))) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
    return blend_back(rgb, restored_face, inverse, mask)


def blend_back(rgb: np.ndarray, crop: np.ndarray, inverse: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB ``rgb`` with the HWC uint8 ``crop`` warped back by ``inverse`` (float [2, 3],
    crop → image) and blended by ``mask`` (float32 [H, W] in [0, 1], image size). Where the mask
    is 0 the result equals ``rgb`` exactly."""
    h, w = rgb.shape[:2]
    crop_back = cv2.warpAffine(crop, np.asarray(inverse, dtype=np.float64), (w, h), flags=cv2.INTER_LINEAR)
    mask = np.asarray(mask, dtype=np.float32)[:, :, None]
    blended = crop_back.astype(np.float32) * mask + rgb.astype(np.float32) * (1.0 - mask)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def restore_face(rgb: np.ndarray, network_output: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``ENHANCED``: the image with CodeFormer's CHW float32 output pasted back (HWC uint8 RGB)."""
    return paste_back(rgb, from_network(network_output), affine)
