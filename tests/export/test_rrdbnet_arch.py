import pytest
import torch

from facecraft.export import weights
from facecraft.export.models import parameter_count
from facecraft.export.rrdbnet_arch import REALESRGAN_PRESETS, RRDBNet, RRDBNetConfig, pixel_unshuffle

# BasicSR RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32): x4plus 16,697,987 (≈ 16.70 M);
# x2plus differs only by conv_first taking 12 channels (+ 64·9·9 weights).
OFFICIAL_PARAMS = {"realesrgan_x4plus": 16_697_987, "realesrgan_x2plus": 16_703_171}
OFFICIAL_KEYS = {
    "conv_first.weight": (64, 3, 3, 3),
    "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
    "body.0.rdb1.conv5.weight": (64, 192, 3, 3),
    "body.22.rdb3.conv4.weight": (32, 160, 3, 3),
    "body.22.rdb3.conv5.bias": (64,),
    "conv_body.weight": (64, 64, 3, 3),
    "conv_up1.weight": (64, 64, 3, 3),
    "conv_up2.bias": (64,),
    "conv_hr.weight": (64, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_full_presets_match_the_official_counts_and_names(name):
    with torch.device("meta"):
        model = RRDBNet(REALESRGAN_PRESETS[name]["full"])
    assert parameter_count(model) == OFFICIAL_PARAMS[name]
    state = model.state_dict()
    expected = dict(OFFICIAL_KEYS)
    if name == "realesrgan_x2plus":
        expected["conv_first.weight"] = (64, 12, 3, 3)
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 2 * (1 + 23 * 3 * 5 + 5)  # weight + bias of every conv


def test_pixel_unshuffle_is_basicsr_order_and_inverts_pixel_shuffle():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    out = pixel_unshuffle(x, 2)
    assert out.shape == (2, 12, 2, 3)
    # channel c·4 + i·2 + j holds the pixel at row offset i, column offset j of channel c
    assert torch.equal(out[:, 1 * 4 + 1 * 2 + 0], x[:, 1, 1::2, 0::2])
    assert torch.equal(out, torch.nn.functional.pixel_unshuffle(x, 2))
    assert torch.equal(torch.nn.functional.pixel_shuffle(out, 2), x)


def test_params_ema_checkpoint_loads_strictly_and_output_is_scaled_and_clamped(tmp_path):
    torch.manual_seed(0)
    cfg = REALESRGAN_PRESETS["realesrgan_x2plus"]["tiny"]
    source = RRDBNet(cfg).eval()
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": source.state_dict(), "params": {}}, path)
    target = RRDBNet(cfg)
    weights.load_strict(target, weights.read_state_dict(path, "params_ema"), label=path.name)
    x = torch.rand(1, 3, 10, 14)
    with torch.inference_mode():
        out = target.eval()(x)
        assert torch.equal(out, source(x))
    assert out.shape == (1, 3, 20, 28)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_other_scales_are_refused():
    with pytest.raises(ValueError, match="scale must be 2 or 4"):
        RRDBNet(RRDBNetConfig(scale=3))
