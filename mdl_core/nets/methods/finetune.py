"""`finetune` (individual network): every trunk tensor per domain (also used for pretraining)."""
from ..registry import register_method
from .base import ALL_ROLES, Method


@register_method("finetune")
class FinetuneMethod(Method):
    trunks = None
    domain_roles = ALL_ROLES
