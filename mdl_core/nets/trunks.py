"""Trunk specifications: which tensors a trunk has, their shapes and roles, and the block layout.

A trunk is pure description (no tensors): :class:`MultiDomainNet` decides, from the method's
partition, which tensors are shared and which live in each domain's container. Canonical tensor
names (``stem.conv.weight``, ``s1.b0.dw1.weight``, ``s3.b3.bn2.running_var`` ...) are the keys of
every state dict the network hands out.

Roles: ``stem`` (stem 3x3 conv), ``dw`` (depthwise 3x3), ``pw`` (pointwise 1x1), ``pw_last`` (the
network's final pointwise conv), ``conv`` (plain 3x3 conv in a block), ``bn`` (BatchNorm weight,
bias, running_mean, running_var).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import register_trunk

BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class TensorDef:
    role: str
    shape: tuple
    is_param: bool = True  # False: a buffer (BN running statistics)


@dataclass(frozen=True)
class Unit:
    """One "3x3 conv position" followed by BN: stem conv, plain 3x3 conv, or depthwise+pointwise."""
    prefix: str      # "stem" or "s1.b0"
    index: str       # "" for the stem, "1"/"2" inside a block
    kind: str        # "stem" | "plain" | "dw"
    cin: int
    cout: int
    stride: int

    def key(self, what: str) -> str:  # what: conv / dw / pw / bn / any adapter name
        return f"{self.prefix}.{what}{self.index}"


@dataclass(frozen=True)
class Block:
    prefix: str
    unit1: Unit
    unit2: Unit
    downsample: bool  # 2x2 avg pool + zero-padded channels shortcut


@dataclass
class TrunkSpec:
    arch: str
    width: float
    stem: Unit
    blocks: list
    stage_of_block: list          # stage number (1..3) of each block
    tensors: dict = field(default_factory=dict)  # canonical key -> TensorDef (ordered)

    @property
    def units(self):
        yield self.stem
        for b in self.blocks:
            yield b.unit1
            yield b.unit2

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].unit2.cout



def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _build(arch: str, width: float, stem_ch: int, stages: tuple, depthwise: bool, blocks_per_stage=4):
    c0 = _ch(stem_ch, width)
    stem = Unit("stem", "", "stem", 3, c0, 1)
    spec = TrunkSpec(arch, width, stem, [], [])
    t = spec.tensors
    t["stem.conv.weight"] = TensorDef("stem", (c0, 3, 3, 3))
    _bn(t, "stem.bn", c0)
    cin = c0
    n_units = 2 * blocks_per_stage * len(stages)
    k = 0
    for s, c in enumerate(stages, start=1):
        cout = _ch(c, width)
        for b in range(blocks_per_stage):
            prefix = f"s{s}.b{b}"
            units = []
            for i in (1, 2):
                k += 1
                ui_in = cin if i == 1 else cout
                stride = 2 if (b == 0 and i == 1) else 1
                if depthwise:
                    u = Unit(prefix, str(i), "dw", ui_in, cout, stride)
                    t[f"{prefix}.dw{i}.weight"] = TensorDef("dw", (ui_in, 1, 3, 3))
                    t[f"{prefix}.pw{i}.weight"] = TensorDef("pw_last" if k == n_units else "pw", (cout, ui_in, 1, 1))
                else:
                    u = Unit(prefix, str(i), "plain", ui_in, cout, stride)
                    t[f"{prefix}.conv{i}.weight"] = TensorDef("conv", (cout, ui_in, 3, 3))
                _bn(t, f"{prefix}.bn{i}", cout)
                units.append(u)
            spec.blocks.append(Block(prefix, units[0], units[1], downsample=(b == 0)))
            spec.stage_of_block.append(s)
            cin = cout
    return spec


def _bn(t: dict, name: str, c: int):
    for n in BN_TENSORS:
        t[f"{name}.{n}"] = TensorDef("bn", (c,), is_param=n in ("weight", "bias"))


@register_trunk("resnet26_dw")
def resnet26_dw(width: float = 1.0) -> TrunkSpec:
    """Guo et al. 2019: decathlon ResNet-26 with every 3x3 conv depthwise-separable.
    Stem 3x3 3->64 + BN; stages 128/256/512 of 4 basic blocks; each block conv = dw3x3 -> pw1x1 -> BN."""
    return _build("resnet26_dw", width, 64, (128, 256, 512), depthwise=True)


@register_trunk("resnet26")
def resnet26(width: float = 1.0) -> TrunkSpec:
    """Rebuffi et al. decathlon ResNet-26: stem 3x3 3->32 + BN; stages 64/128/256; plain 3x3 conv -> BN."""
    return _build("resnet26", width, 32, (64, 128, 256), depthwise=False)
