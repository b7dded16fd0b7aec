"""U²-Net (Qin et al., Pattern Recognition 2020) written for ONNX export.

Attribute names follow the official ``xuebinqin/U-2-Net`` ``model/u2net.py`` (``stage1`` …
``stage1d``, ``rebnconvin``/``rebnconv1``…/``rebnconv1d`` with ``conv_s1``/``bn_s1``, ``side1``…
``side6``, ``outconv``) so ``u2net.pth``, ``u2net_human_seg.pth`` (both ``U2NET``) and
``u2netp.pth`` (``U2NETP``) load with ``strict=True``. Pooling and upsampling carry no weights and
are functional here. Upsampling resizes to the skip tensor's size (bilinear, half-pixel), which
is the official behaviour since its 2020-05 fix and equals 2x for the 320x320 input.

Only the fused map ``d0`` (after sigmoid) is returned: the side outputs are training aids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Stage name → (block kind, in_ch, mid_ch, out_ch); decoder stages end in "d".
StageSpec = tuple[str, int, int, int]


@dataclass(frozen=True)
class U2NetConfig:
    """Per-stage widths; ``side_channels`` are the inputs of ``side1`` … ``side6``."""

    stages: tuple[tuple[str, StageSpec], ...]

    @property
    def stage_map(self) -> dict[str, StageSpec]:
        return dict(self.stages)


def _widths(encoder: list[tuple[int, int, int]], decoder: list[tuple[int, int, int]]) -> U2NetConfig:
    kinds = ("RSU7", "RSU6", "RSU5", "RSU4", "RSU4F", "RSU4F")
    names = [f"stage{i}" for i in range(1, 7)]
    stages = [(name, (kind, *dims)) for name, kind, dims in zip(names, kinds, encoder, strict=True)]
    dec_names = ("stage5d", "stage4d", "stage3d", "stage2d", "stage1d")
    dec_kinds = ("RSU4F", "RSU4", "RSU5", "RSU6", "RSU7")
    stages += [(name, (kind, *dims)) for name, kind, dims in zip(dec_names, dec_kinds, decoder, strict=True)]
    return U2NetConfig(stages=tuple(stages))


U2NET_FULL = _widths(
    [(3, 32, 64), (64, 32, 128), (128, 64, 256), (256, 128, 512), (512, 256, 512), (512, 256, 512)],
    [(1024, 256, 512), (1024, 128, 256), (512, 64, 128), (256, 32, 64), (128, 16, 64)],
)
U2NETP = _widths(
    [(3, 16, 64), (64, 16, 64), (64, 16, 64), (64, 16, 64), (64, 16, 64), (64, 16, 64)],
    [(128, 16, 64)] * 5,
)
U2NET_TINY = _widths(
    [(3, 4, 16)] + [(16, 4, 16)] * 5,
    [(32, 4, 16)] * 5,
)

# Variant → architecture for the ``full`` preset (``u2net_human_seg`` is ``U2NET`` retrained).
U2NET_VARIANTS: dict[str, U2NetConfig] = {
    "u2net": U2NET_FULL,
    "u2net_human_seg": U2NET_FULL,
    "u2netp": U2NETP,
}


class REBNCONV(nn.Module):
    """3x3 (dilated) conv → BatchNorm → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


def _upsample_like(src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.interpolate(src, size=target.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of height ``height`` (RSU-7 … RSU-4): a small U-Net plus its input skip."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        for level in range(2, height):
            setattr(self, f"rebnconv{level}", REBNCONV(mid_ch, mid_ch))
        setattr(self, f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, dirate=2))
        for level in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{level}d", REBNCONV(mid_ch * 2, mid_ch))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for level in range(2, self.height):
            skips.append(getattr(self, f"rebnconv{level}")(_pool(skips[-1])))
        hx = getattr(self, f"rebnconv{self.height}")(skips[-1])
        for level in range(self.height - 1, 0, -1):
            skip = skips[level - 1]
            if level < self.height - 1:
                hx = _upsample_like(hx, skip)
            hx = getattr(self, f"rebnconv{level}d")(torch.cat((hx, skip), 1))
        return hx + hxin


class RSU4F(nn.Module):
    """RSU-4 with dilations (1, 2, 4, 8) instead of pooling: keeps the resolution."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dirate=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dirate=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dirate=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dirate=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        return self.rebnconv1d(torch.cat((hx2d, hx1), 1)) + hxin


def _block(kind: str, in_ch: int, mid_ch: int, out_ch: int) -> nn.Module:
    if kind == "RSU4F":
        return RSU4F(in_ch, mid_ch, out_ch)
    return RSU(int(kind[3:]), in_ch, mid_ch, out_ch)


class U2Net(nn.Module):
    """U²-Net saliency / human segmentation network.

    ``forward(x)``: ``x`` ``[B, 3, 320, 320]`` float32 RGB, divided by the image max then ImageNet
    mean/std normalised → fused map ``d0`` after sigmoid, ``[B, 1, 320, 320]`` float32 in [0, 1].
    """

    def __init__(self, cfg: U2NetConfig = U2NET_FULL):
        super().__init__()
        stages = cfg.stage_map
        for name, (kind, in_ch, mid_ch, out_ch) in cfg.stages:
            setattr(self, name, _block(kind, in_ch, mid_ch, out_ch))
        side_sources = ("stage1d", "stage2d", "stage3d", "stage4d", "stage5d", "stage6")
        for index, source in enumerate(side_sources, start=1):
            setattr(self, f"side{index}", nn.Conv2d(stages[source][3], 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hx1 = self.stage1(x)
        hx2 = self.stage2(_pool(hx1))
        hx3 = self.stage3(_pool(hx2))
        hx4 = self.stage4(_pool(hx3))
        hx5 = self.stage5(_pool(hx4))
        hx6 = self.stage6(_pool(hx5))

        hx5d = self.stage5d(torch.cat((_upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((_upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((_upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((_upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((_upsample_like(hx2d, hx1), hx1), 1))

        sides = [self.side1(hx1d)]
        for index, feat in enumerate((hx2d, hx3d, hx4d, hx5d, hx6), start=2):
            sides.append(_upsample_like(getattr(self, f"side{index}")(feat), sides[0]))
        return torch.sigmoid(self.outconv(torch.cat(sides, 1)))
