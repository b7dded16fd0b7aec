import pytest
import torch

from facecraft.export.models import parameter_count
from facecraft.export.u2net_arch import U2NET_TINY, U2NET_VARIANTS, U2Net

# Exact counts of the official U2NET(3, 1) and U2NETP(3, 1) from xuebinqin/U-2-Net model/u2net.py.
OFFICIAL_PARAMS = {"u2net": 44_009_869, "u2net_human_seg": 44_009_869, "u2netp": 1_131_181}

OFFICIAL_KEYS = {
    "u2net": {
        "stage1.rebnconvin.conv_s1.weight": (64, 3, 3, 3),
        "stage1.rebnconv7.conv_s1.weight": (32, 32, 3, 3),
        "stage1.rebnconv6d.bn_s1.running_var": (32,),
        "stage5.rebnconv4.conv_s1.weight": (256, 256, 3, 3),
        "stage5d.rebnconvin.conv_s1.weight": (512, 1024, 3, 3),
        "stage1d.rebnconv1d.conv_s1.weight": (64, 32, 3, 3),
        "side6.weight": (1, 512, 3, 3),
        "outconv.weight": (1, 6, 1, 1),
    },
    "u2netp": {
        "stage1.rebnconvin.conv_s1.weight": (64, 3, 3, 3),
        "stage2d.rebnconv6.conv_s1.weight": (16, 16, 3, 3),
        "stage4.rebnconv3d.conv_s1.weight": (16, 32, 3, 3),
        "side3.weight": (1, 64, 3, 3),
        "outconv.bias": (1,),
    },
}


@pytest.mark.parametrize("variant", sorted(OFFICIAL_PARAMS))
def test_full_variants_match_official_parameter_counts(variant):
    with torch.device("meta"):
        model = U2Net(U2NET_VARIANTS[variant])
    assert parameter_count(model) == OFFICIAL_PARAMS[variant]
    state = model.state_dict()
    for key, shape in OFFICIAL_KEYS["u2netp" if variant == "u2netp" else "u2net"].items():
        assert tuple(state[key].shape) == shape, key
    assert sum(k.endswith("num_batches_tracked") for k in state) == 112
    assert sum(k.startswith("side") for k in state) == 12


def test_dilation_and_dirate_follow_official_blocks():
    with torch.device("meta"):
        model = U2Net(U2NET_VARIANTS["u2net"])
    assert model.stage1.rebnconv7.conv_s1.dilation == (2, 2)
    assert model.stage5.rebnconv4.conv_s1.dilation == (8, 8)
    assert model.stage5.rebnconv3d.conv_s1.dilation == (4, 4)


def test_tiny_output_is_a_probability_map_per_image():
    torch.manual_seed(0)
    model = U2Net(U2NET_TINY).eval()
    x = torch.randn(2, 3, 320, 320)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 1, 320, 320)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0  # not a constant map
