import torch

from facecraft.export import weights
from facecraft.export.inswapper_arch import INSWAPPER_FULL, INSWAPPER_PRESETS, InswapperGenerator
from facecraft.export.models import parameter_count

# Our inswapper_128-compatible generator (the ReSwapper layer structure; documented in
# docs/export.md): 138,292,739 parameters. Sample keys with shapes (ReSwapper module names).
GENERATOR_PARAMS = 138_292_739
KEYS = {
    "down.0.weight": (128, 3, 7, 7),
    "down.2.weight": (256, 128, 3, 3),
    "down.4.weight": (512, 256, 3, 3),
    "down.6.weight": (1024, 512, 3, 3),
    "style_blocks.5.conv1.conv.weight": (1024, 1024, 3, 3),
    "style_blocks.0.conv2.adain.style.weight": (2048, 512),
    "style_blocks.0.conv2.adain.style.bias": (2048,),
    "up.1.weight": (512, 1024, 3, 3),
    "up.4.weight": (256, 512, 3, 3),
    "up.6.weight": (128, 256, 3, 3),
    "up.8.weight": (3, 128, 7, 7),
}


def test_full_generator_parameter_count_and_names():
    with torch.device("meta"):
        model = InswapperGenerator(INSWAPPER_FULL)
    assert parameter_count(model) == GENERATOR_PARAMS
    state = model.state_dict()
    for key, shape in KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert len(model.style_blocks) == 6
    assert model.down[0].padding_mode == "reflect" and model.up[8].padding_mode == "reflect"
    assert model.down[4].stride == (2, 2) and model.down[6].stride == (2, 2)


def test_state_dict_loads_strictly_and_output_follows_the_source_latent(tmp_path):
    torch.manual_seed(0)
    cfg = INSWAPPER_PRESETS["tiny"]
    source = InswapperGenerator(cfg).eval()
    path = tmp_path / "reswapper.pth"
    torch.save(source.state_dict(), path)
    model = InswapperGenerator(cfg)
    weights.load_strict(model, weights.read_state_dict(path), label=path.name)
    model.eval()
    target = torch.rand(2, 3, 128, 128)
    latent = torch.nn.functional.normalize(torch.randn(2, 512), dim=1)
    with torch.inference_mode():
        out = model(target, latent)
        other = model(target, latent.flip(0))
        assert torch.equal(out, source(target, latent))
    assert out.shape == (2, 3, 128, 128)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out - other).abs().max() > 1e-6  # the identity latent reaches the output
