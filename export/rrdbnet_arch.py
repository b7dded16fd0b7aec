"""Real-ESRGAN's generator: BasicSR's ``RRDBNet`` (ESRGAN) written for ONNX export.

Module and state-dict names follow BasicSR ``basicsr/archs/rrdbnet_arch.py`` (``conv_first``,
``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``), so ``RealESRGAN_x4plus.pth`` (release v0.1.0) and ``RealESRGAN_x2plus.pth``
(release v0.2.1), whose weights sit under ``params_ema``, load with ``strict=True``. Both are
``RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4|2)`` in
Real-ESRGAN's ``inference_realesrgan.py``.

For ×2 the network first pixel-unshuffles the input by 2 (3 → 12 channels at half the size) and
then runs the ×4 body, so the output is ×2 overall. The unshuffle here is a reshape/transpose
(the same element order as BasicSR's ``pixel_unshuffle``), which exports to ONNX with dynamic
height and width; the input height and width must be even for ×2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RRDBNetConfig:
    """``scale`` is the overall upscaling (4 or 2); the other fields are BasicSR's arguments."""

    scale: int
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    num_in_ch: int = 3
    num_out_ch: int = 3


REALESRGAN_PRESETS: dict[str, dict[str, RRDBNetConfig]] = {
    "realesrgan_x4plus": {
        "full": RRDBNetConfig(scale=4),
        "tiny": RRDBNetConfig(scale=4, num_feat=8, num_block=1, num_grow_ch=4),
    },
    "realesrgan_x2plus": {
        "full": RRDBNetConfig(scale=2),
        "tiny": RRDBNetConfig(scale=2, num_feat=8, num_block=1, num_grow_ch=4),
    },
}


def pixel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, C·f², H/f, W/f]`` by reshape/transpose (channel index c·f² + i·f + j
    for the pixel at row offset i, column offset j). H and W must be multiples of ``factor``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * factor * factor, h // factor, w // factor)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs; the residual is scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        for index in range(1, 5):
            setattr(
                self, f"conv{index}", nn.Conv2d(num_feat + (index - 1) * num_grow_ch, num_grow_ch, 3, 1, 1)
            )
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for index in range(1, 5):
            conv = getattr(self, f"conv{index}")
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator.

    ``forward(x)``: ``x`` ``[B, 3, H, W]`` float32 RGB in [0, 1] (H, W even for ×2) →
    ``[B, 3, scale·H, scale·W]`` float32 RGB clamped to [0, 1] (Real-ESRGAN clamps its output
    the same way after the network).
    """

    def __init__(self, cfg: RRDBNetConfig):
        super().__init__()
        if cfg.scale not in (2, 4):
            raise ValueError(f"RRDBNet scale must be 2 or 4, got {cfg.scale}")
        self.scale = cfg.scale
        in_ch = cfg.num_in_ch * (4 if cfg.scale == 2 else 1)
        self.conv_first = nn.Conv2d(in_ch, cfg.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(cfg.num_feat, cfg.num_grow_ch) for _ in range(cfg.num_block)))
        self.conv_body = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(cfg.num_feat, cfg.num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = pixel_unshuffle(x, 2) if self.scale == 2 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out.clamp(0.0, 1.0)
