"""Which networks can be exported, in which variants and presets, with which tensor layouts.

The ONNX tensor names and non-batch shapes here are the contract with ``docs/triton.md`` and the
``config.pbtxt`` of each ONNX model (``codeformer``, ``u2net``, ``arcface_w600k_r50``,
``inswapper_128``, ``realesrgan_x4plus``, ``realesrgan_x2plus``): both presets keep exactly the
same I/O. ``u2net_general`` and ``u2netp`` (facecraft.export.catalog) have ``u2net``'s tensors.
A dimension of ``-1`` is dynamic (Real-ESRGAN's height and width); the output's dynamic
dimensions are the input's times ``ModelSpec.scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facecraft.export.arcface_arch import ARCFACE_PRESETS, IResNet
from facecraft.export.catalog import DEFAULT_VARIANTS, MODEL_NAMES, REALESRGAN_MODELS, VARIANTS
from facecraft.export.codeformer_arch import CODEFORMER_PRESETS, CodeFormer
from facecraft.export.inswapper_arch import INSWAPPER_PRESETS, InswapperGenerator
from facecraft.export.rrdbnet_arch import REALESRGAN_PRESETS, RRDBNet
from facecraft.export.u2net_arch import U2NET_TINY, U2NET_VARIANTS, U2Net

PRESETS = ("full", "tiny")
# Height and width of the example inputs (tracing, parity) of the dynamic-size models.
EXAMPLE_SIZE = {"full": (64, 96), "tiny": (24, 40)}


class UnknownModelError(ValueError):
    """An unknown model name, variant or preset."""


@dataclass(frozen=True)
class TensorSpec:
    """An ONNX graph input/output: name and shape without the (dynamic) batch axis, float32;
    ``-1`` marks a dynamic dimension."""

    name: str
    shape: tuple[int, ...]

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    preset: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    description: str
    scale: int = 1  # output dynamic dims = input dims × scale

    def input_shape(self, tensor: TensorSpec, batch: int) -> tuple[int, ...]:
        """Concrete shape of an example input at ``batch``: dynamic H, W are ``EXAMPLE_SIZE`` of
        the preset for batch 1 and the transposed size otherwise (so every parity check runs
        two different sizes, H ≠ W)."""
        height, width = EXAMPLE_SIZE[self.preset]
        if batch != 1:
            height, width = width, height
        dims = list(tensor.shape)
        if tensor.dynamic:
            dims[-2:] = [height, width]
        return (batch, *dims)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of ``input_shape`` (batch first)."""
        dims = [
            size * self.scale if fixed == -1 else fixed
            for fixed, size in zip(self.output.shape, input_shape[1:], strict=False)
        ]
        return (input_shape[0], *dims)

    @property
    def architecture(self) -> str:
        """The network: the model's own name, except that every segmentation model is ``u2net``."""
        return "u2net" if self.name in ("u2net_general", "u2netp") else self.name


def resolve(name: str, variant: str | None = None, preset: str = "full") -> ModelSpec:
    """Validate (name, variant, preset) and describe the model's ONNX I/O.

    Raises ``UnknownModelError`` naming the valid choices.
    """
    if name not in MODEL_NAMES:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    variant = variant or DEFAULT_VARIANTS[name]
    if variant not in VARIANTS[name]:
        raise UnknownModelError(
            f"unknown variant {variant!r} for {name}; choose one of {', '.join(VARIANTS[name])}"
        )
    if preset not in PRESETS:
        raise UnknownModelError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if name == "arcface_w600k_r50":
        return ModelSpec(
            name,
            variant,
            preset,
            inputs=(TensorSpec("input", (3, 112, 112)),),
            output=TensorSpec("output", (512,)),
            description="ArcFace iresnet50 (w600k_r50): input NCHW float32 RGB (x-127.5)/127.5 on the "
            "ArcFace 112 template -> output [B,512] float32 embedding (not normalised)",
        )
    if name == "inswapper_128":
        return ModelSpec(
            name,
            variant,
            preset,
            inputs=(TensorSpec("target", (3, 128, 128)), TensorSpec("source", (512,))),
            output=TensorSpec("output", (3, 128, 128)),
            description="inswapper_128-compatible generator: target NCHW float32 RGB in [0,1] on the "
            "128 swap template + source [B,512] latent (normalised embedding x emap, normalised) -> "
            "output [B,3,128,128] float32 RGB in [0,1]; emap = the last initializer",
        )
    if name in REALESRGAN_MODELS:
        scale = REALESRGAN_PRESETS[name][preset].scale
        return ModelSpec(
            name,
            variant,
            preset,
            inputs=(TensorSpec("input", (3, -1, -1)),),
            output=TensorSpec("output", (3, -1, -1)),
            description=f"Real-ESRGAN RRDBNet x{scale}: input NCHW float32 RGB in [0,1], any H, W"
            f"{' (even)' if scale == 2 else ''} -> output [B,3,{scale}H,{scale}W] float32 RGB clamped to [0,1]",
            scale=scale,
        )
    if name == "codeformer":
        return ModelSpec(
            name,
            variant,
            preset,
            inputs=(TensorSpec("input", (3, 512, 512)), TensorSpec("w", (1,))),
            output=TensorSpec("output", (3, 512, 512)),
            description="CodeFormer: input NCHW float32 RGB in [-1,1] + fidelity w [B,1] in [0,1] "
            "-> output NCHW float32 RGB, nominally [-1,1]",
        )
    return ModelSpec(
        name,
        variant,
        preset,
        inputs=(TensorSpec("input", (3, 320, 320)),),
        output=TensorSpec("output", (1, 320, 320)),
        description="U2-Net: input NCHW float32 RGB (/ image max, ImageNet mean/std) "
        "-> output [B,1,320,320] float32 fused map d0 after sigmoid, [0,1]",
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised (current torch RNG) network for ``spec``, in eval mode."""
    if spec.name == "codeformer":
        model: nn.Module = CodeFormer(CODEFORMER_PRESETS[spec.preset])
    elif spec.name == "arcface_w600k_r50":
        model = IResNet(ARCFACE_PRESETS[spec.preset])
    elif spec.name == "inswapper_128":
        model = InswapperGenerator(INSWAPPER_PRESETS[spec.preset])
    elif spec.name in REALESRGAN_MODELS:
        model = RRDBNet(REALESRGAN_PRESETS[spec.name][spec.preset])
    else:
        model = U2Net(U2NET_VARIANTS[spec.variant] if spec.preset == "full" else U2NET_TINY)
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def example_inputs(spec: ModelSpec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs in each tensor's valid range, keyed by ONNX input name.

    CodeFormer ``w`` spans [0, 1] and includes both ends when ``batch >= 2``; the swap latent
    ``source`` has unit L2 norm per row, as the pipeline feeds it. Dynamic sizes: see
    ``ModelSpec.input_shape``.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        shape = spec.input_shape(tensor, batch)
        if tensor.name == "w":
            values = rng.uniform(0.0, 1.0, size=shape)
            if batch >= 2:
                values[0, 0], values[1, 0] = 0.0, 1.0
        elif tensor.name == "source":
            values = rng.normal(size=shape)
            values /= np.linalg.norm(values, axis=1, keepdims=True)
        elif spec.name in ("codeformer", "arcface_w600k_r50"):
            values = rng.uniform(-1.0, 1.0, size=shape)
        elif spec.name == "inswapper_128" or spec.name in REALESRGAN_MODELS:
            values = rng.uniform(0.0, 1.0, size=shape)
        else:  # ImageNet-normalised [0, 1] pixels span about [-2.1, 2.6]
            values = rng.uniform(-2.1, 2.6, size=shape)
        feeds[tensor.name] = values.astype(np.float32)
    return feeds


# Untrained stand-ins whose final conv is standardised after random init: (module, mean, std) of
# its output channels on the calibration inputs. Without it, seeded random RRDBNet weights give an
# output clamped to 0 almost everywhere and the swap generator a near-constant 0.5, which would
# make the parity check and the pipeline tests meaningless.
OUTPUT_CALIBRATION: dict[str, tuple[str, float, float]] = {
    "inswapper_128": ("up.8", 0.0, 1.0),  # pre-tanh: output (tanh + 1) / 2 spreads over ~[0.1, 0.9]
    **dict.fromkeys(REALESRGAN_MODELS, ("conv_last", 0.5, 0.2)),  # pre-clamp, in [0, 1] mostly
}


# Batch of the BatchNorm calibration pass (default 2). ArcFace ends in a BatchNorm1d over the
# embedding: statistics from 2 samples made some of its 512 outputs reach ±200 (full preset:
# parity 4e-4 against the 1e-3 tolerance); 8 samples keep them near unit scale.
CALIBRATION_BATCH = {"arcface_w600k_r50": 8}


def _standardise_conv(model: nn.Module, spec: ModelSpec, feeds: dict[str, np.ndarray]) -> None:
    """Rescale the calibrated conv's weights and bias per output channel (an exact affine change
    of its output) so that output has the mean and std of ``OUTPUT_CALIBRATION`` on ``feeds``."""
    name, mean, std = OUTPUT_CALIBRATION[spec.name]
    conv = model.get_submodule(name)
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        with torch.no_grad():
            model(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
    finally:
        handle.remove()
    output = captured[0].transpose(0, 1).flatten(1)  # channels, values
    scale = std / output.std(dim=1).clamp_min(1e-12)
    with torch.no_grad():
        conv.weight.mul_(scale[:, None, None, None])
        conv.bias.copy_((conv.bias - output.mean(dim=1)) * scale + mean)


def random_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Seeded random weights (untrained), eval mode; same seed → identical weights.

    BatchNorm running statistics are then estimated from one forward pass on seeded random
    inputs, so activations stay in range instead of saturating the sigmoid output: an untrained
    model whose output is a constant 0 or 1 would make the parity check meaningless. For the same
    reason the final conv of the swap generator and of RRDBNet is standardised
    (``OUTPUT_CALIBRATION``).
    """
    torch.manual_seed(seed)
    model = build_model(spec)
    feeds = example_inputs(spec, CALIBRATION_BATCH.get(spec.name, 2), seed=seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration pass
            norm.train()
        with torch.no_grad():
            model(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
        for norm in norms:
            norm.momentum = 0.1
    model.eval()
    if spec.name in OUTPUT_CALIBRATION:
        _standardise_conv(model, spec, feeds)
    return model
