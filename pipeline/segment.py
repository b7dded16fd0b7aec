"""U²-Net human segmentation: input preparation and turning the fused map into an alpha matte."""

from __future__ import annotations

import cv2
import numpy as np

SEG_SIZE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def prepare_segmentation(rgb: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB → CHW float32 [3, 320, 320]: resized, ÷ the image's own max, ImageNet mean/std."""
    resized = cv2.resize(rgb, (SEG_SIZE, SEG_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    peak = float(resized.max())
    scaled = resized / (peak if peak > 0 else 1.0)
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1).astype(np.float32))


def normalise_map(seg_map: np.ndarray) -> np.ndarray:
    """Min-max normalise ONE fused map (any shape) to [0, 1], float32.

    A flat map carries no foreground signal; it becomes all ones (keep the whole image) rather
    than an all-transparent portrait.
    """
    values = np.asarray(seg_map, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low < 1e-6:
        return np.ones_like(values, dtype=np.float32)
    return (values - low) / (high - low)


def normalise_maps(seg_maps: np.ndarray) -> np.ndarray:
    """Per-sample (never per-batch) min-max normalisation of a [B, ...] batch of maps."""
    return np.stack([normalise_map(m) for m in np.asarray(seg_maps)]).astype(np.float32)


def alpha_from_map(seg_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """U²-Net's fused map ([1, 320, 320] or [320, 320]) → alpha float32 [h, w] in [0, 1].

    ``size`` is the target (w, h).
    """
    values = np.asarray(seg_map, dtype=np.float32)
    values = values.reshape(values.shape[-2:])
    alpha = cv2.resize(normalise_map(values), (int(size[0]), int(size[1])), interpolation=cv2.INTER_LINEAR)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)
