"""Networks: trunks, adapter methods, the soft-sharing gate and the multi-domain network."""
from . import methods, trunks  # noqa: F401  (registers trunks and methods)
from .network import MultiDomainNet, create_network
from .registry import list_methods, list_trunks, register_method, register_trunk

__all__ = ["MultiDomainNet", "create_network", "list_methods", "list_trunks",
           "register_method", "register_trunk"]
