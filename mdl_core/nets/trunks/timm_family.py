"""Any timm model is a trunk by name: ``timm/<model>`` (``timm/tf_efficientnet_lite0``,
``timm/mobilenetv3_large_100``, ``timm/convnext_atto``, ...). Adding a timm family needs no code: the
methods read the model's modules (see :mod:`mdl.core.nets.layout`). Built without weights; weights
come from a registered trunk version (``mdl trunk import``)."""
from __future__ import annotations

from torch import nn

PREFIX = "timm/"


def create_timm_trunk(model_name: str, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    import timm

    if width != 1.0:
        raise ValueError(f"width {width:g} is not available for timm trunks: pick a timm model of the size you want")
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name[:6]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model {model_name!r}{hint}")
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    return model


def timm_version() -> str:
    import timm

    return timm.__version__
