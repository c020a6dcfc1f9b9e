"""Adapter methods; importing this package registers all of them."""
from . import bn, classifier_only, dw, dw_sharing, finetune, parallel_adapter, series_adapter  # noqa: F401
from . import parallel_adapter_svd  # noqa: F401
from .base import Method

__all__ = ["Method"]
