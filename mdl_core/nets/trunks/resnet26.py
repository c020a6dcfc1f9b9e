"""The decathlon ResNet-26 family, written as ordinary modules (the way timm writes a model file).

``resnet26`` (Rebuffi et al.): stem 3x3 conv 3->32 + BN, stages 64/128/256 of 4 basic blocks, each
block conv-BN-ReLU-conv-BN + shortcut, ReLU. ``resnet26_dw`` (Guo et al. 2019): every block 3x3 conv
depthwise-separable (3x3 depthwise -> 1x1 pointwise -> BN), stem 3->64, stages 128/256/512. Every
stage starts with stride 2; the shortcut is parameter-free (2x2 average pool + zero-padded channels).
Module names give the checkpoint keys (``stem.conv.weight``, ``s1.b0.dw1.weight``, ``s3.b3.bn2.*``,
``head.weight``), the same keys mdl's registry has always stored for these trunks.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_trunk


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def shortcut(x: torch.Tensor, cout: int, downsample: bool) -> torch.Tensor:
    """Parameter-free shortcut: 2x2 average pool (stride 2) + zero-padded channels."""
    if downsample:
        x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
    if x.shape[1] < cout:
        x = F.pad(x, (0, 0, 0, 0, 0, cout - x.shape[1]))
    return x


class Stem(nn.Module):
    def __init__(self, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(3, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, add the shortcut, ReLU. ``depthwise``: each conv is dw3x3 -> pw1x1."""

    def __init__(self, cin: int, cout: int, stride: int, depthwise: bool):
        super().__init__()
        self.depthwise, self.cout, self.downsample = depthwise, cout, stride > 1
        for i, (ci, s) in enumerate(((cin, stride), (cout, 1)), start=1):
            if depthwise:
                setattr(self, f"dw{i}", nn.Conv2d(ci, ci, 3, stride=s, padding=1, groups=ci, bias=False))
                setattr(self, f"pw{i}", nn.Conv2d(ci, cout, 1, bias=False))
            else:
                setattr(self, f"conv{i}", nn.Conv2d(ci, cout, 3, stride=s, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))

    def _conv(self, i: int, x):
        if self.depthwise:
            return getattr(self, f"pw{i}")(getattr(self, f"dw{i}")(x))
        return getattr(self, f"conv{i}")(x)

    def forward(self, x):
        y = F.relu(self.bn1(self._conv(1, x)))
        y = self.bn2(self._conv(2, y))
        return F.relu(y + shortcut(x, self.cout, self.downsample))


class ResNet26(nn.Module):
    def __init__(self, stem: int, stages: tuple, depthwise: bool, width: float = 1.0, num_classes: int = 1000,
                 blocks_per_stage: int = 4):
        super().__init__()
        c = _ch(stem, width)
        self.stem = Stem(c)
        for s, cs in enumerate(stages, start=1):
            cout = _ch(cs, width)
            blocks = OrderedDict()
            for b in range(blocks_per_stage):
                blocks[f"b{b}"] = BasicBlock(c, cout, 2 if b == 0 else 1, depthwise)
                c = cout
            self.add_module(f"s{s}", nn.Sequential(blocks))
        self.num_features = c
        self.head = nn.Linear(c, num_classes)
        self.pretrained_cfg = {"classifier": "head"}
        _init(self)

    def forward_features(self, x):
        return self.s3(self.s2(self.s1(self.stem(x))))

    def forward(self, x):
        return self.head(self.forward_features(x).mean((2, 3)))

    @staticmethod
    def gate_sections(depthwise_paths: list[str]) -> dict[str, list[str]]:
        """Soft-sharing placements by stage (paper Table 3): early = stage 1, middle = 2, late = 3."""
        return {name: [p for p in depthwise_paths if p.startswith(f"s{s}.")]
                for name, s in (("early", 1), ("middle", 2), ("late", 3))}


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # depthwise: variance-preserving for its 9 taps (fan_in)
            mode = "fan_in" if m.groups > 1 else "fan_out"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


@register_trunk("resnet26_dw")
def resnet26_dw(width: float = 1.0, num_classes: int = 1000) -> ResNet26:
    """Guo et al. 2019: decathlon ResNet-26 with every block 3x3 conv depthwise-separable."""
    return ResNet26(64, (128, 256, 512), depthwise=True, width=width, num_classes=num_classes)


@register_trunk("resnet26")
def resnet26(width: float = 1.0, num_classes: int = 1000) -> ResNet26:
    """Rebuffi et al.: decathlon ResNet-26 with plain 3x3 convs."""
    return ResNet26(32, (64, 128, 256), depthwise=False, width=width, num_classes=num_classes)
