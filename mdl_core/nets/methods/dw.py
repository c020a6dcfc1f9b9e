"""`dw` (Guo et al. 2019): per domain all depthwise filters, all BN, the last pointwise conv, the head."""
from ..registry import register_method
from .base import Method


@register_method("dw")
class DepthwiseMethod(Method):
    trunks = ("resnet26_dw",)
    domain_roles = frozenset({"dw", "bn", "pw_last"})
