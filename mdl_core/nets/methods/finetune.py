"""`finetune` (an individual network per domain; also how a trunk is pretrained): every module with
tensors is per domain. A composite that holds tensors itself (ConvNeXt's layer scale) is wrapped whole."""
from ..registry import register_method
from .base import Method


@register_method("finetune")
class FinetuneMethod(Method):
    def parts(self, layout):
        return layout.owners + layout.units
