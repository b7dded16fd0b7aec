import numpy as np
import pytest

from facecraft.pipeline.errors import PipelineError
from facecraft.pipeline.tiles import (
    MAX_OUTPUT_PIXELS,
    enhance_frame,
    merge_tiles,
    pad_to_even,
    plan_tiles,
    split_tiles,
)


def nearest(scale):
    return lambda batch: batch.repeat(scale, axis=2).repeat(scale, axis=3)


def gradient(height, width):
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack([xs * 200 / width, ys * 200 / height, (xs + ys) * 100 / (width + height)], axis=2)
    return np.rint(rgb + 20).astype(np.uint8)


def test_grid_covers_the_image_with_one_tile_size_and_the_overlap():
    grid = plan_tiles(300, 500, 128, 16)
    assert (grid.tile_height, grid.tile_width) == (128, 128)
    ys = sorted({y for y, _ in grid.origins})
    xs = sorted({x for _, x in grid.origins})
    assert ys[0] == 0 and ys[-1] + 128 == 300 and xs[-1] + 128 == 500
    assert all(b - a <= 128 - 16 for a, b in zip(xs, xs[1:], strict=False))  # neighbours overlap >= 16
    small = plan_tiles(40, 60, 128, 16)
    assert small.origins == ((0, 0),) and (small.tile_height, small.tile_width) == (40, 60)


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_result_is_exactly_the_untiled_one_for_a_pointwise_model(scale):
    rgb = gradient(90, 141)  # odd width: the x2 path pads to even and crops back
    out = enhance_frame(rgb, nearest(scale), scale=scale, tile=32, overlap=8)
    assert out.shape == (90 * scale, 141 * scale, 3)
    np.testing.assert_array_equal(out, rgb.repeat(scale, axis=0).repeat(scale, axis=1))


def test_no_seam_on_a_smooth_gradient_when_tiles_disagree():
    # Each tile comes back 6 levels brighter or darker than its neighbour, as an untrained or
    # border-sensitive model may do: a hard cut would show a 6-level step at every seam.
    rgb = gradient(128, 256)
    calls = []

    def drifting(batch):
        calls.append(len(batch))
        offsets = np.where(np.arange(len(batch)) % 2, 3.0, -3.0).astype(np.float32) / 255.0
        return nearest(2)(batch) + offsets[:, None, None, None]

    out = enhance_frame(rgb, drifting, scale=2, tile=64, overlap=16).astype(np.int16)
    assert calls == [len(plan_tiles(128, 256, 64, 16).origins)]  # every tile in one batch
    steps = np.abs(np.diff(out, axis=1)).max()
    smooth = np.abs(np.diff(rgb.repeat(2, 0).repeat(2, 1).astype(np.int16), axis=1)).max()
    assert steps <= smooth + 1, (steps, smooth)  # the 6-level offset is spread over the overlap


def test_merge_refuses_outputs_that_do_not_fit_the_grid():
    grid = plan_tiles(64, 64, 32, 8)
    tiles = split_tiles(gradient(64, 64), grid)
    with pytest.raises(ValueError, match="do not fit"):
        merge_tiles(tiles, grid, 2, 8)  # not upscaled


def test_options_and_pixel_caps_are_checked_before_any_work():
    rgb = gradient(8, 8)
    never = lambda batch: pytest.fail("the model must not run")  # noqa: E731
    for kwargs, message in (
        ({"scale": 3}, "scale must be one of"),
        ({"tile": 33}, "tile must be even"),
        ({"tile": 64, "overlap": 40}, "overlap must be in"),
    ):
        with pytest.raises(PipelineError, match=message) as info:
            enhance_frame(rgb, never, **kwargs)
        assert info.value.code == "invalid_option"
    big = np.zeros((1100, 1100, 3), np.uint8)  # x4 would be 19.4 Mpx
    with pytest.raises(PipelineError, match="output cap") as info:
        enhance_frame(big, never, scale=4)
    assert info.value.code == "image_too_large" and MAX_OUTPUT_PIXELS / 4 < 1100 * 1100 * 4
    assert enhance_frame(big[:64, :64], nearest(2), scale=2).shape == (128, 128, 3)


def test_pad_to_even_reflects_and_keeps_even_images():
    rgb = gradient(5, 7)
    padded = pad_to_even(rgb)
    assert padded.shape == (6, 8, 3)
    np.testing.assert_array_equal(padded[:5, :7], rgb)
    np.testing.assert_array_equal(padded[5, :7], rgb[3])  # reflect
    even = gradient(4, 6)
    assert pad_to_even(even) is even


@pytest.mark.parametrize(("name", "scale"), [("realesrgan_x2plus", 2), ("realesrgan_x4plus", 4)])
def test_real_tiny_export_enhances_a_photo_to_exactly_scale_times_its_size(tmp_path, faces_dir, name, scale):
    import warnings

    import onnxruntime as ort
    from PIL import Image

    from facecraft.export.exporter import UntrainedWeightsWarning, export_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        result = export_model(name, preset="tiny", weights="random", seed=0, repo=tmp_path, progress=False)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    batches = []

    def upscale(batch):
        batches.append(batch.shape)
        return session.run(["output"], {"input": batch})[0]

    rgb = np.asarray(Image.open(faces_dir / "fr__obama_small.jpg").convert("RGB"))[:101, :153]  # odd sides
    out = enhance_frame(rgb, upscale, scale=scale, tile=64, overlap=8)
    assert out.shape == (101 * scale, 153 * scale, 3) and out.dtype == np.uint8
    grid = plan_tiles(102 if scale == 2 else 101, 154 if scale == 2 else 153, 64, 8)
    assert batches == [(len(grid.origins), 3, 64, 64)]  # one batch of equal tiles
    assert out.std() > 5  # an image, not a constant
