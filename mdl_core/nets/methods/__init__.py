"""Adapter methods; importing this package registers all of them."""
from . import bn, classifier_only, dw, dw_sharing, finetune, parallel_adapter, series_adapter  # noqa: F401
from .base import Method

__all__ = ["Method"]
