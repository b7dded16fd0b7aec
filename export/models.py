"""Which networks can be exported, in which variants and presets, with which tensor layouts.

The ONNX tensor names and non-batch shapes here are the contract with ``docs/triton.md`` and the
``codeformer`` / ``u2net`` ``config.pbtxt`` files: both presets keep exactly the same I/O.
``u2net_general`` and ``u2netp`` (facecraft.export.catalog) have ``u2net``'s tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facecraft.export.catalog import DEFAULT_VARIANTS, MODEL_NAMES, VARIANTS
from facecraft.export.codeformer_arch import CODEFORMER_PRESETS, CodeFormer
from facecraft.export.u2net_arch import U2NET_TINY, U2NET_VARIANTS, U2Net

PRESETS = ("full", "tiny")


class UnknownModelError(ValueError):
    """An unknown model name, variant or preset."""


@dataclass(frozen=True)
class TensorSpec:
    """An ONNX graph input/output: name and shape without the (dynamic) batch axis, float32."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    preset: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    description: str

    @property
    def architecture(self) -> str:
        """``codeformer`` or ``u2net`` (every segmentation model is a U²-Net)."""
        return "codeformer" if self.name == "codeformer" else "u2net"


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
    else:
        model = U2Net(U2NET_VARIANTS[spec.variant] if spec.preset == "full" else U2NET_TINY)
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def example_inputs(spec: ModelSpec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs in each tensor's valid range, keyed by ONNX input name.

    CodeFormer ``w`` spans [0, 1] and includes both ends when ``batch >= 2``.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        shape = (batch, *tensor.shape)
        if tensor.name == "w":
            values = rng.uniform(0.0, 1.0, size=shape)
            if batch >= 2:
                values[0, 0], values[1, 0] = 0.0, 1.0
        elif spec.name == "codeformer":
            values = rng.uniform(-1.0, 1.0, size=shape)
        else:  # ImageNet-normalised [0, 1] pixels span about [-2.1, 2.6]
            values = rng.uniform(-2.1, 2.6, size=shape)
        feeds[tensor.name] = values.astype(np.float32)
    return feeds


def random_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Seeded random weights (untrained), eval mode; same seed → identical weights.

    BatchNorm running statistics are then estimated from one forward pass on seeded random
    inputs, so activations stay in range instead of saturating the sigmoid output: an untrained
    model whose output is a constant 0 or 1 would make the parity check meaningless.
    """
    torch.manual_seed(seed)
    model = build_model(spec)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration pass
            norm.train()
        feeds = example_inputs(spec, 2, seed=seed)
        with torch.no_grad():
            model(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
        for norm in norms:
            norm.momentum = 0.1
    return model.eval()
