"""`classifier-only`: per domain only the head; BN runs on the trunk's frozen statistics."""
from ..registry import register_method
from .base import Method


@register_method("classifier-only")
class ClassifierOnlyMethod(Method):
    trunks = None
    domain_roles = frozenset()
