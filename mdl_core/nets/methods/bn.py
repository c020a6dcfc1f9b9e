"""`bn` (Bilen & Vedaldi 2017): per domain the normalisation layers (scale, bias and statistics) and
the head."""
from ..registry import register_method
from .base import Method


@register_method("bn")
class BatchNormMethod(Method):
    needs, needs_what = "norms", "normalisation layers"

    def parts(self, layout):
        return list(layout.norms)
