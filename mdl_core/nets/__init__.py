"""Networks: trunks, adapter methods, the soft-sharing gate and the multi-domain network."""
from . import methods, trunks  # noqa: F401  (registers trunks and methods)
from .network import MultiDomainNet, create_network
from .registry import get_method, list_methods, list_trunks, register_method, register_trunk


def method_applies(arch: str, method: str, width: float = 1.0) -> bool:
    """Whether ``method``'s rule finds what it needs in trunk ``arch`` (builds the trunk module once)."""
    from .layout import TrunkLayout
    from .trunks import classifier_path, trunk_factory

    model = trunk_factory(arch)(width=width)
    try:
        get_method(method)().check(TrunkLayout.of(model, classifier_path(model)), arch)
    except ValueError:
        return False
    return True


__all__ = ["MultiDomainNet", "create_network", "list_methods", "list_trunks", "method_applies",
           "register_method", "register_trunk"]
