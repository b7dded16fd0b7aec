"""An inswapper_128-compatible face-swap generator, written for ONNX export.

insightface publishes ``inswapper_128.onnx`` as ONNX only (no PyTorch definition, no state
dict; non-commercial licence). This module reproduces its I/O contract so our seeded random
stand-in and the official file are interchangeable behind one Triton config:

- inputs ``target`` ``[B, 3, 128, 128]`` float32 RGB in [0, 1] (the target face on the 128 swap
  template) and ``source`` ``[B, 512]`` float32 latent (the source identity: see
  ``facecraft.pipeline.swap.source_latent``);
- output ``output`` ``[B, 3, 128, 128]`` float32 RGB, ≈ [0, 1] (``(tanh + 1) / 2``);
- the 512×512 ``emap`` matrix that maps an ArcFace embedding to the latent is stored as the
  **last graph initializer**, which the graph itself does not use (insightface's
  ``INSwapper`` reads it as ``graph.initializer[-1]``; ``facecraft.export.onnx_export.append_emap``
  writes ours there).

The layer structure follows the public PyTorch reproduction ReSwapper
(``somanchiu/ReSwapper`` ``StyleTransferModel_128.py``; module names kept, so its checkpoints
load with ``strict=True``): encoder reflect-padded 7×7 conv 3→128, 3×3 128→256, two stride-2 3×3
convs to 1024 channels at 32×32 (LeakyReLU 0.2 after each); six residual style blocks, each two
3×3 1024→1024 convs whose outputs are instance-normalised and then scaled/shifted per channel by
a Linear(512 → 2·1024) of the latent (AdaIN; ReLU after the first); decoder bilinear ×2 + conv
1024→512, bilinear ×2 + conv 512→256, conv 256→128, reflect-padded 7×7 conv 128→3, tanh, then
``(x + 1) / 2``. Full preset: 138,292,739 parameters (the official file is ≈ 554 MB of float32,
i.e. ≈ 138.5 M values including the 262,144 of the emap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LATENT_SIZE = 512
FACE_SIZE = 128


@dataclass(frozen=True)
class InswapperConfig:
    """Encoder widths (after the 7×7, the 3×3, and the two stride-2 convs) and style blocks."""

    widths: tuple[int, int, int, int] = (128, 256, 512, 1024)
    style_blocks: int = 6
    latent_size: int = LATENT_SIZE


INSWAPPER_FULL = InswapperConfig()
INSWAPPER_TINY = InswapperConfig(widths=(8, 8, 16, 16), style_blocks=2)
INSWAPPER_PRESETS = {"full": INSWAPPER_FULL, "tiny": INSWAPPER_TINY}


class AdaIN(nn.Module):
    """Instance norm (no affine, eps 1e-6), then per-channel scale and shift from the latent."""

    def __init__(self, latent_size: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False, eps=1e-6)
        self.style = nn.Linear(latent_size, channels * 2)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(latent)[:, :, None, None].chunk(2, dim=1)
        return gamma * self.norm(x) + beta


class StyleConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, latent_size: int, activation: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.adain = AdaIN(latent_size, out_channels)
        self.activation = activation

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.activation(self.adain(self.conv(x), latent))


class StyleBlock(nn.Module):
    def __init__(self, channels: int, latent_size: int):
        super().__init__()
        self.conv1 = StyleConvLayer(channels, channels, latent_size, nn.ReLU())
        self.conv2 = StyleConvLayer(channels, channels, latent_size, nn.Identity())

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x, latent), latent)


class InswapperGenerator(nn.Module):
    """``forward(target, source)``: ``target`` ``[B, 3, 128, 128]`` RGB in [0, 1], ``source``
    ``[B, 512]`` latent → ``[B, 3, 128, 128]`` float32 RGB in [0, 1]."""

    def __init__(self, cfg: InswapperConfig = INSWAPPER_FULL):
        super().__init__()
        w0, w1, w2, w3 = cfg.widths
        self.down = nn.Sequential(
            nn.Conv2d(3, w0, 7, padding=3, padding_mode="reflect"),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w0, w1, 3, stride=1, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.style_blocks = nn.ModuleList(StyleBlock(w3, cfg.latent_size) for _ in range(cfg.style_blocks))
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(w3, w2, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(w2, w1, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w1, w0, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w0, 3, 7, padding=3, padding_mode="reflect"),
            nn.Tanh(),
        )

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = self.down(target)
        for block in self.style_blocks:
            x = block(x, source) + x
        return (self.up(x) + 1.0) / 2.0
