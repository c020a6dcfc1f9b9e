"""Trunks: nn.Module classifiers. Own families register by name (one file per family); any timm model
is a trunk as ``timm/<model>``."""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from ..registry import _TRUNKS, list_trunks
from . import resnet26  # noqa: F401  (registers resnet26, resnet26_dw)
from . import instance_norm  # noqa: F401  (registers resnet26_in, resnet26_dw_in)
from .timm_family import PREFIX as TIMM_PREFIX
from .timm_family import create_timm_trunk


def trunk_factory(arch: str) -> Callable[..., nn.Module]:
    """``arch`` -> factory(width=1.0, num_classes=1000) -> nn.Module."""
    if arch.startswith(TIMM_PREFIX):
        return partial(create_timm_trunk, arch[len(TIMM_PREFIX):])
    if arch not in _TRUNKS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(list_trunks())}, or timm/<model>")
    return _TRUNKS[arch]


def classifier_path(model: nn.Module) -> str:
    """Where the trunk's classifier sits (timm's pretrained_cfg['classifier'] convention)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    path = cfg.get("classifier")
    if not path:
        raise ValueError(f"{type(model).__name__} does not say where its classifier is (pretrained_cfg['classifier'])")
    return path
