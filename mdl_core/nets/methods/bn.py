"""`bn` (Bilen & Vedaldi 2017): per domain BN scale/bias and running statistics, and the head."""
from ..registry import register_method
from .base import Method


@register_method("bn")
class BatchNormMethod(Method):
    trunks = ("resnet26",)
    domain_roles = frozenset({"bn"})
