"""`dw` (Guo et al. 2019): per domain every depthwise conv, every normalisation layer, the last
pointwise layer of the feature extractor, the head. Pointwise filters are shared."""
from ..registry import register_method
from .base import Method


@register_method("dw")
class DepthwiseMethod(Method):
    needs, needs_what = "depthwise", "depthwise convolutions"
    gateable = True

    def parts(self, layout):
        last = [layout.last_pointwise] if layout.last_pointwise else []
        return layout.depthwise + layout.norms + last
