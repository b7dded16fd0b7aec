"""Face swap steps around ArcFace and the inswapper_128-compatible generator (no Triton needed).

Source side: the source face → ArcFace 112 crop → ``arcface_w600k_r50`` embedding →
``source_latent`` (the generator's ``source`` input). Target side: each target face → swap 128
crop (``swap_input``) → generator → ``paste_swapped`` with FaceFusion's feathered box mask.

Templates and numbers, with their sources:

- ``ARCFACE_TEMPLATE_112``: insightface ``utils/face_align.py`` ``arcface_dst`` (FaceFusion's
  ``arcface_112_v2``); the 5 points are left eye, right eye, nose tip, left and right mouth corner.
- ``SWAP_TEMPLATE_128``: the same template shifted right by 8 px, which is what insightface's
  ``estimate_norm`` gives for a 128 crop (ratio 1, ``diff_x`` 8) and FaceFusion's ``arcface_128``.
- ArcFace input: RGB, ``(x − 127.5) / 127.5``, NCHW (insightface ``ArcFaceONNX``, FaceFusion).
- Generator input: RGB / 255 in [0, 1]; output clipped to [0, 1] then × 255 (insightface
  ``INSwapper``, FaceFusion ``inswapper_128`` mean 0 / std 1).
- Latent: ``l = normalise(normalise(e) · emap)`` as insightface's ``INSwapper.get`` does (emap =
  the model file's last initializer). FaceFusion 3.x feeds ``(e · emap) / ‖e‖`` without the
  second normalisation: the same direction, another length (see docs/architecture.md).
- Box mask: FaceFusion ``create_static_box_mask`` with blur 0.3 and no padding: blur amount
  ``int(0.5 · 0.3 · width)`` (19 px at 128), a zero border of half of it (9 px), Gaussian σ a
  quarter of it (4.75 px).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from facecraft.pipeline.align import blend_back, estimate_alignment, warp_face

ARCFACE_SIZE = 112
SWAP_SIZE = 128
EMBEDDING_SIZE = 512
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
SWAP_TEMPLATE_128 = ARCFACE_TEMPLATE_112 + np.array([8.0, 0.0], dtype=np.float32)
MASK_BLUR = 0.3  # FaceFusion's default face_mask_blur
MASK_PADDING = (0, 0, 0, 0)  # top, right, bottom, left in % of the crop


def arcface_input(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB + dlib 68 landmarks [68, 2] → CHW float32 [3, 112, 112], ``(x-127.5)/127.5``."""
    affine = estimate_alignment(landmarks, ARCFACE_TEMPLATE_112)
    crop = warp_face(rgb, affine, ARCFACE_SIZE, border_replicate=True).astype(np.float32)
    return np.ascontiguousarray(((crop - 127.5) / 127.5).transpose(2, 0, 1))


def swap_input(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TARGET CHW float32 [3, 128, 128] RGB in [0, 1], AFFINE float32 [2, 3] image → crop) for
    one target face."""
    affine = estimate_alignment(landmarks, SWAP_TEMPLATE_128)
    crop = warp_face(rgb, affine, SWAP_SIZE, border_replicate=True)
    return np.ascontiguousarray((crop.astype(np.float32) / 255.0).transpose(2, 0, 1)), affine


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"{what} has no direction (norm {norm})")
    return vector / norm


def source_latent(embedding: np.ndarray, emap: np.ndarray) -> np.ndarray:
    """The generator's ``source`` input, float32 [512] with unit L2 norm, from an ArcFace
    embedding (float [512], any scale) and the model's float32 [512, 512] ``emap``.

    Raises ``ValueError`` on other shapes or a zero embedding/latent."""
    embedding = np.asarray(embedding, dtype=np.float64).reshape(-1)
    emap = np.asarray(emap, dtype=np.float64)
    if embedding.shape != (EMBEDDING_SIZE,) or emap.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE):
        raise ValueError(f"embedding [512] and emap [512, 512] expected, got {embedding.shape}, {emap.shape}")
    latent = _unit(embedding, "the source embedding") @ emap
    return _unit(latent, "the source latent").astype(np.float32)


def emap_of(model, label: str) -> np.ndarray:
    """The float32 [512, 512] emap of a loaded swap ``onnx.ModelProto``: its last initializer
    (where insightface's ``inswapper_128.onnx`` and our stand-in keep it). Raises ``ValueError``
    when that is not a float32 [512, 512] matrix."""
    from onnx import numpy_helper

    if not model.graph.initializer:
        raise ValueError(f"{label} has no initializers, hence no emap")
    emap = numpy_helper.to_array(model.graph.initializer[-1])
    if emap.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or emap.dtype != np.float32:
        raise ValueError(f"{label}: the last initializer is {emap.dtype} {list(emap.shape)}, not the emap")
    return emap


def read_emap(onnx_path: Path) -> np.ndarray:
    """``emap_of`` the swap model file at ``onnx_path``."""
    import onnx

    return emap_of(onnx.load(str(onnx_path)), str(onnx_path))


@functools.lru_cache(maxsize=4)
def _read_emap_at(onnx_path: Path, modified_ns: int) -> np.ndarray:
    return read_emap(onnx_path)


def served_emap(onnx_path: Path) -> np.ndarray:
    """``read_emap(onnx_path)``, cached until the file changes (a re-export). Raises ``OSError``
    when the file is absent (the swap model is not exported), ``ValueError`` as ``emap_of``."""
    return _read_emap_at(Path(onnx_path), Path(onnx_path).stat().st_mtime_ns)


def box_mask(size: int = SWAP_SIZE, blur: float = MASK_BLUR, padding=MASK_PADDING) -> np.ndarray:
    """float32 [size, size] in [0, 1]: FaceFusion's feathered box mask of a square crop (see the
    module docstring for the numbers)."""
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    top, right, bottom, left = (max(blur_area, int(size * p / 100)) for p in padding)
    mask = np.ones((size, size), np.float32)
    mask[:top, :] = 0
    mask[size - bottom :, :] = 0
    mask[:, :left] = 0
    mask[:, size - right :] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    return mask


def from_swap_output(output: np.ndarray) -> np.ndarray:
    """CHW float32 generator output (≈ [0, 1]) → clip → × 255 → HWC uint8 RGB."""
    scaled = np.clip(np.asarray(output, dtype=np.float32), 0.0, 1.0).transpose(1, 2, 0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def paste_swapped(rgb: np.ndarray, output: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB ``rgb`` with one swapped face (generator CHW output [3, 128, 128]) pasted
    back through ``affine`` (image → crop) with the box mask; pixels outside the warped crop box
    are returned unchanged."""
    h, w = rgb.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
    mask = cv2.warpAffine(box_mask(SWAP_SIZE), inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return blend_back(rgb, from_swap_output(output), inverse, mask)


def swap_faces(rgb: np.ndarray, landmarks: list[np.ndarray], latent: np.ndarray, generate) -> np.ndarray:
    """Every face of ``landmarks`` (dlib 68-point arrays) in HWC uint8 RGB ``rgb`` swapped to the
    identity ``latent`` (float32 [512], ``source_latent``); returns a new image of the same size.

    ``generate`` maps (``target`` float32 [N, 3, 128, 128], ``source`` float32 [N, 512]) to the
    generator output [N, 3, 128, 128]: all faces of the image go to it as one batch, the one
    latent repeated (the source embedding is computed once per request). Faces are pasted back in
    order, so where two boxes overlap the later face is on top."""
    if not landmarks:
        return rgb.copy()
    prepared = [swap_input(rgb, points) for points in landmarks]
    targets = np.stack([target for target, _ in prepared])
    sources = np.repeat(np.asarray(latent, dtype=np.float32).reshape(1, -1), len(prepared), axis=0)
    outputs = np.asarray(generate(targets, sources), dtype=np.float32)
    if outputs.shape != targets.shape:
        raise ValueError(f"generator output {outputs.shape} does not match its input {targets.shape}")
    result = rgb
    for output, (_, affine) in zip(outputs, prepared, strict=True):
        result = paste_swapped(result, output, affine)
    return result
