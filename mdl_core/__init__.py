"""mdl.core (the mdl_core/ folder): the science of mdl (networks, adapter types, gate, data, training, scoring).

Network entry points are re-exported lazily so ``import mdl.core`` stays cheap for code that only
needs e.g. the data or scoring submodules.
"""
from __future__ import annotations

_NET_EXPORTS = ("create_network", "list_trunks", "list_methods", "MultiDomainNet",
                "register_trunk", "register_method")

__all__ = list(_NET_EXPORTS)


def __getattr__(name: str):
    if name in _NET_EXPORTS:
        from . import nets
        return getattr(nets, name)
    raise AttributeError(f"module 'mdl.core' has no attribute {name!r}")
