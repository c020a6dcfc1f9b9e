"""Instance-normalised ResNet-26 trunks (Bilen & Vedaldi 2017's universal variant): every BatchNorm2d of
``resnet26`` / ``resnet26_dw`` replaced by an InstanceNorm2d with a learnt affine and no running
statistics, so each image is normalised by its own feature statistics and nothing depends on the
domain but the head. Built from the family's own factory, so it follows any change to it; the state
dict keys are the BN ones less the running statistics (a BN trunk's weights load after dropping them).
"""
from __future__ import annotations

from torch import nn

from mdl.core.choices import BN_STATISTICS

from ..registry import register_trunk
from .resnet26 import resnet26, resnet26_dw

# BN trunk family -> its instance-norm twin (an instance-norm trunk trains on as itself)
INSTANCE_NORM_OF = {"resnet26": "resnet26_in", "resnet26_dw": "resnet26_dw_in",
                    "resnet26_in": "resnet26_in", "resnet26_dw_in": "resnet26_dw_in"}


def to_instance_norm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``model`` by InstanceNorm2d(affine=True, track_running_stats=False)."""
    for path, m in list(model.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    nn.InstanceNorm2d(m.num_features, eps=m.eps, affine=True, track_running_stats=False))
    return model


def from_bn_state(state: dict) -> dict:
    """A BN trunk's tensors for its instance-norm twin: the affine kept, the running statistics dropped."""
    return {k: v for k, v in state.items() if not k.endswith(BN_STATISTICS)}


@register_trunk("resnet26_in")
def resnet26_in(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return to_instance_norm(resnet26(width=width, num_classes=num_classes))


@register_trunk("resnet26_dw_in")
def resnet26_dw_in(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return to_instance_norm(resnet26_dw(width=width, num_classes=num_classes))
