"""`dw-sharing` (Guo et al.'s baseline): per domain every pointwise and dense conv (the last one
included), every norm, the head; the depthwise filters are shared."""
from ..registry import register_method
from .base import Method


@register_method("dw-sharing")
class DepthwiseSharingMethod(Method):
    needs, needs_what = "depthwise", "depthwise convolutions to share"

    def parts(self, layout):
        dense = [p for p in layout.units if p not in layout.depthwise and p not in layout.norms]
        return dense + layout.norms
