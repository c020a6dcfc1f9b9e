"""What a trunk is made of, read off its modules: the rule vocabulary every method selects from.

A *unit* is a module whose tensors a method may make per-domain as a whole: a conv, a linear layer or
a normalisation layer (their children, e.g. the activation inside timm's ``BatchNormAct2d``, hold no
tensors). A composite module that holds tensors itself (ConvNeXt's layer-scale ``gamma``) is an
*owner*; only ``finetune`` makes owners per-domain (wrapping the whole composite).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
UNIT_TYPES = (nn.Conv2d, nn.Linear) + NORM_TYPES


def is_depthwise(m: nn.Module) -> bool:
    """groups == in_channels (> 1): one spatial filter (or a fixed multiple) per input channel."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def is_pointwise(m: nn.Module) -> bool:
    """Cross-channel mixing without spatial extent: a 1x1 dense conv, or a linear layer."""
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.groups == 1 and tuple(m.kernel_size) == (1, 1)


def is_dense_spatial(m: nn.Module) -> bool:
    """A dense (groups == 1) kxk conv with k > 1: where residual adapters attach."""
    return isinstance(m, nn.Conv2d) and m.groups == 1 and max(m.kernel_size) > 1


@dataclass
class TrunkLayout:
    head: str                                        # the classifier (nn.Linear)
    depthwise: list[str] = field(default_factory=list)
    pointwise: list[str] = field(default_factory=list)  # 1x1 dense convs and linear layers, head excluded
    dense_spatial: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)   # every unit but the head, in module order
    owners: list[str] = field(default_factory=list)  # composites holding tensors directly

    @property
    def last_pointwise(self) -> str | None:
        """The feature extractor's last pointwise layer (the paper's per-domain last conv)."""
        return self.pointwise[-1] if self.pointwise else None

    @classmethod
    def of(cls, model: nn.Module, head: str) -> "TrunkLayout":
        if not isinstance(model.get_submodule(head), nn.Linear):
            raise ValueError(f"the trunk's classifier {head!r} is not a linear layer")
        layout = cls(head=head)
        inside_unit: list[str] = []
        for path, m in model.named_modules():
            if not path or path == head or any(path.startswith(u + ".") for u in inside_unit):
                continue
            if isinstance(m, UNIT_TYPES):
                inside_unit.append(path)
                if not any(True for _ in m.parameters()) and not any(True for _ in m.buffers()):
                    continue
                layout.units.append(path)
                if is_depthwise(m):
                    layout.depthwise.append(path)
                elif isinstance(m, NORM_TYPES):
                    layout.norms.append(path)
                else:
                    if is_pointwise(m):
                        layout.pointwise.append(path)
                    if is_dense_spatial(m):
                        layout.dense_spatial.append(path)
            elif any(t is not None for t in m._parameters.values()) or \
                    any(k not in m._non_persistent_buffers_set and t is not None for k, t in m._buffers.items()):
                layout.owners.append(path)
        return layout
