"""`classifier-only`: per domain only the head; norms run on the trunk's frozen statistics."""
from ..registry import register_method
from .base import Method


@register_method("classifier-only")
class ClassifierOnlyMethod(Method):
    pass
