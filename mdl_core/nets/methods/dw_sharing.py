"""`dw-sharing` (Guo et al. baseline): per domain every pointwise conv (incl. the last), BN, head;
depthwise filters and the stem shared."""
from ..registry import register_method
from .base import Method


@register_method("dw-sharing")
class DepthwiseSharingMethod(Method):
    trunks = ("resnet26_dw",)
    domain_roles = frozenset({"pw", "pw_last", "bn"})
