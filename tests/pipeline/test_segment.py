import numpy as np

from facecraft.pipeline.segment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    alpha_from_map,
    normalise_map,
    normalise_maps,
    prepare_segmentation,
)


def test_prepare_divides_by_the_image_max_then_imagenet_normalises():
    rgb = np.full((100, 50, 3), 100, np.uint8)
    rgb[0, 0] = (200, 200, 200)
    tensor = prepare_segmentation(rgb)
    assert tensor.shape == (3, 320, 320) and tensor.dtype == np.float32
    # Most pixels are 100, the image max after resizing is ≤ 200; a flat region maps to 100/max.
    flat = tensor[:, 160, 160]
    peak = 100 / flat_peak(rgb)
    assert np.allclose(flat, (peak - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-4)


def flat_peak(rgb):
    import cv2

    return float(cv2.resize(rgb, (320, 320), interpolation=cv2.INTER_AREA).max())


def test_prepare_of_a_black_image_is_finite():
    assert np.isfinite(prepare_segmentation(np.zeros((10, 10, 3), np.uint8))).all()


def test_normalisation_is_per_sample_not_per_batch():
    faint = np.full((1, 4, 4), 0.1, np.float32)
    faint[0, 0, 0] = 0.2
    strong = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4)
    batch = normalise_maps(np.stack([faint, strong]))
    assert batch[0].max() == 1.0 and batch[0].min() == 0.0  # per-batch would leave it near 0.1-0.2
    assert np.allclose(batch[1], strong)


def test_flat_map_keeps_everything():
    assert np.all(normalise_map(np.full((320, 320), 0.3, np.float32)) == 1.0)


def test_alpha_is_resized_back_to_the_image():
    seg = np.zeros((1, 320, 320), np.float32)
    seg[0, :, 160:] = 5.0  # right half foreground
    alpha = alpha_from_map(seg, (200, 100))
    assert alpha.shape == (100, 200) and alpha.dtype == np.float32
    assert alpha[50, 10] == 0.0 and alpha[50, 190] == 1.0
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
