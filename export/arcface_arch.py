"""ArcFace recogniser: insightface's ``IResNet`` (iresnet50 for ``w600k_r50``) written for ONNX export.

Module and state-dict names follow insightface ``recognition/arcface_torch/backbones/iresnet.py``
(``conv1``, ``bn1``, ``prelu``, ``layer1`` … ``layer4`` of ``IBasicBlock`` with ``bn1``, ``conv1``,
``bn2``, ``prelu``, ``conv2``, ``bn3``, ``downsample.0``/``downsample.1``, then ``bn2``, ``fc``,
``features``), so an arcface_torch ``backbone.pth`` of the same depth loads with ``strict=True``.
Hyper-parameters of the official ``iresnet50``: blocks (3, 4, 14, 3), widths 64/128/256/512, the
stride on each stage's first block's *second* conv, all BatchNorms eps 1e-5, no conv bias, the
head BN → flatten (512·7·7 = 25,088) → Linear(25,088, 512) → BatchNorm1d ``features``. Dropout is
0 at inference and carries no weights, so it is left out.

The published ``w600k_r50.onnx`` (insightface ``buffalo_l``, re-published by FaceFusion as
``arcface_w600k_r50.onnx``) is ONNX only; this definition exports seeded random stand-ins with the
same I/O when that file is unavailable (see ``docs/export.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EMBEDDING_SIZE = 512
INPUT_SIZE = 112  # the ArcFace crop: 112×112, spatial 7×7 after the four stride-2 stages


@dataclass(frozen=True)
class IResNetConfig:
    """Blocks per stage and stage widths; ``num_features`` is the embedding size (512)."""

    layers: tuple[int, int, int, int]
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    num_features: int = EMBEDDING_SIZE


IRESNET50 = IResNetConfig(layers=(3, 4, 14, 3))
IRESNET_TINY = IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
ARCFACE_PRESETS = {"full": IRESNET50, "tiny": IRESNET_TINY}


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN → conv3x3 → BN → PReLU → conv3x3 (stride) → BN, plus identity."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """ArcFace backbone.

    ``forward(x)``: ``x`` ``[B, 3, 112, 112]`` float32 RGB, ``(pixel - 127.5) / 127.5`` (so in
    [-1, 1]), aligned on the ArcFace 112 template → ``[B, 512]`` float32 embedding (not
    normalised; callers L2-normalise it).
    """

    fc_scale = 7 * 7

    def __init__(self, cfg: IResNetConfig = IRESNET50):
        super().__init__()
        self.inplanes = cfg.widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-5)
        self.prelu = nn.PReLU(self.inplanes)
        for index, (blocks, planes) in enumerate(zip(cfg.layers, cfg.widths, strict=True), start=1):
            setattr(self, f"layer{index}", self._make_layer(planes, blocks, stride=2))
        self.bn2 = nn.BatchNorm2d(cfg.widths[-1], eps=1e-5)
        self.fc = nn.Linear(cfg.widths[-1] * self.fc_scale, cfg.num_features)
        self.features = nn.BatchNorm1d(cfg.num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as in insightface: a fixed-scale BN

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(x))
