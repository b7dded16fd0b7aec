import torch

from facecraft.export import weights
from facecraft.export.arcface_arch import ARCFACE_PRESETS, IRESNET50, IResNet
from facecraft.export.models import parameter_count

# insightface iresnet50 (recognition/arcface_torch/backbones/iresnet.py): 43,590,848 parameters
# (≈ 43.59 M), and a sample of its state-dict keys with their shapes.
OFFICIAL_IRESNET50_PARAMS = 43_590_848
OFFICIAL_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_var": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.13.bn3.bias": (256,),
    "layer3.13.conv2.weight": (256, 256, 3, 3),
    "layer4.2.conv2.weight": (512, 512, 3, 3),
    "bn2.weight": (512,),
    "fc.weight": (512, 25_088),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}


def test_iresnet50_matches_the_official_count_names_and_hyper_parameters():
    with torch.device("meta"):
        model = IResNet(IRESNET50)
    assert parameter_count(model) == OFFICIAL_IRESNET50_PARAMS
    state = model.state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 14, 3]
    assert "layer3.1.downsample.0.weight" not in state  # only each stage's first block downsamples
    assert not any(key.endswith(".bias") and "conv" in key for key in state)  # convs have no bias
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # stride on the second conv
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert not model.features.weight.requires_grad


def test_a_checkpoint_with_the_official_names_loads_strictly(tmp_path):
    torch.manual_seed(3)
    source = IResNet(ARCFACE_PRESETS["tiny"]).eval()
    path = tmp_path / "backbone.pth"
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)  # arcface_torch saves backbone.state_dict(), without BN counters
    target = IResNet(ARCFACE_PRESETS["tiny"])
    weights.load_strict(target, weights.read_state_dict(path), label="backbone.pth")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(target.eval()(x), source(x))


def test_tiny_embedding_has_the_contract_shape_and_depends_on_the_face():
    torch.manual_seed(0)
    model = IResNet(ARCFACE_PRESETS["tiny"]).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-3
