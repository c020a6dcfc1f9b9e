"""The decathlon ResNet-26 family, written as ordinary modules (the way timm writes a model file), as
the papers' reference code builds it (srebuffi/residual_adapters ``models.py``; yunhuiguo/
Depthwise_Convolution_for_Multiple_Domain_Learning ``models/resnet.py`` and ``models/base.py``).

``resnet26`` (Rebuffi et al.): stem 3x3 conv 3->32 + BN, stages 64/128/256 of 4 basic blocks, each
block conv-BN-ReLU-conv-BN + shortcut, ReLU. ``resnet26_dw`` (Guo et al. 2019): every 3x3 conv
depthwise-separable (3x3 depthwise -> 1x1 pointwise -> BN), the stem too (3x3 depthwise on the 3 input
channels, 1x1 3->64), stages 128/256/512. Both references: **no ReLU after the stem** (its BN output
feeds the first block and its shortcut), and an **end BN + ReLU** before global pooling (per domain
under every method that owns norms). Every stage starts with stride 2; the shortcut is parameter-free
(2x2 average pool + zero-padded channels; ``ceil_mode`` only matters for odd sizes, which the
references never see).
Module names give the checkpoint keys (``stem.conv.weight`` / ``stem.dw.weight``, ``s1.b0.dw1.weight``,
``s3.b3.bn2.*``, ``end_bn.*``, ``head.weight``); :mod:`mdl.core.nets.reference` maps the reference
implementations' own key names onto them.

``resnet26_v0`` / ``resnet26_dw_v0`` are the networks mdl built before it followed the references (a ReLU
after a dense stem, no end BN); they stay so registries trained with them keep loading (migration 0004
renames those trunks' architecture).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import batch_in_channels, fold_batch, unfold_batch
from ..registry import register_trunk


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def shortcut(x: torch.Tensor, cout: int, downsample: bool) -> torch.Tensor:
    """Parameter-free shortcut: 2x2 average pool (stride 2) + zero-padded channels. A mixed batch in the
    per-sample layout (layers.batch_in_channels) is pooled as the [1, B*C, H, W] tensor it is and padded
    over its innermost channels: the same numbers, the layout kept (the pool on it as such is 16x slower
    on the CPU, and its NCHW result makes the residual add mix layouts)."""
    folded = batch_in_channels(x)
    if downsample:
        pool = lambda t: F.avg_pool2d(t, 2, ceil_mode=True, count_include_pad=False)  # noqa: E731
        x = unfold_batch(pool(fold_batch(x)), x.shape[0]) if folded else pool(x)
    if x.shape[1] < cout:
        pad = cout - x.shape[1]
        x = F.pad(x.permute(2, 3, 0, 1), (0, pad)).permute(2, 3, 0, 1) if folded else F.pad(x, (0, 0, 0, 0, 0, pad))
    return x


class Stem(nn.Module):
    """3x3 conv + BN; ``depthwise``: the conv is a 3x3 depthwise on the input channels then a 1x1
    pointwise (Guo et al.'s ``SeparableConv2d(3, 64)``). ``relu``: only the pre-reference (v0) networks."""

    def __init__(self, cout: int, depthwise: bool = False, relu: bool = False):
        super().__init__()
        self.depthwise, self.relu = depthwise, relu
        if depthwise:
            self.dw = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
            self.pw = nn.Conv2d(3, cout, 1, bias=False)
        else:
            self.conv = nn.Conv2d(3, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn(self.pw(self.dw(x)) if self.depthwise else self.conv(x))
        return F.relu(y) if self.relu else y


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
                 blocks_per_stage: int = 4, reference: bool = True):
        super().__init__()
        c = _ch(stem, width)
        self.stem = Stem(c, depthwise=depthwise and reference, relu=not reference)
        for s, cs in enumerate(stages, start=1):
            cout = _ch(cs, width)
            blocks = OrderedDict()
            for b in range(blocks_per_stage):
                blocks[f"b{b}"] = BasicBlock(c, cout, 2 if b == 0 else 1, depthwise)
                c = cout
            self.add_module(f"s{s}", nn.Sequential(blocks))
        self.num_features = c
        self.end_bn = nn.BatchNorm2d(c) if reference else None
        self.head = nn.Linear(c, num_classes)
        self.pretrained_cfg = {"classifier": "head"}
        _init(self)

    def forward_features(self, x):
        x = self.s3(self.s2(self.s1(self.stem(x))))
        return F.relu(self.end_bn(x)) if self.end_bn is not None else x

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
    """Guo et al. 2019: decathlon ResNet-26 with every 3x3 conv depthwise-separable, the stem's too."""
    return ResNet26(64, (128, 256, 512), depthwise=True, width=width, num_classes=num_classes)


@register_trunk("resnet26")
def resnet26(width: float = 1.0, num_classes: int = 1000) -> ResNet26:
    """Rebuffi et al.: decathlon ResNet-26 with plain 3x3 convs."""
    return ResNet26(32, (64, 128, 256), depthwise=False, width=width, num_classes=num_classes)


@register_trunk("resnet26_dw_v0")
def resnet26_dw_v0(width: float = 1.0, num_classes: int = 1000) -> ResNet26:
    """mdl's resnet26_dw before it followed the reference (dense stem + ReLU, no end BN): old registries."""
    return ResNet26(64, (128, 256, 512), depthwise=True, width=width, num_classes=num_classes, reference=False)


@register_trunk("resnet26_v0")
def resnet26_v0(width: float = 1.0, num_classes: int = 1000) -> ResNet26:
    """mdl's resnet26 before it followed the reference (ReLU after the stem, no end BN): old registries."""
    return ResNet26(32, (64, 128, 256), depthwise=False, width=width, num_classes=num_classes, reference=False)
