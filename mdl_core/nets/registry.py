"""Name -> factory registries for trunks and adapter methods (in the style of timm's ``_registry.py``).

A new trunk family is one function decorated with ``@register_trunk("name")`` returning an nn.Module
classifier (any timm model needs none: ``timm/<model>``); a new method is one module
holding a :class:`~mdl.core.nets.methods.base.Method` subclass decorated with ``@register_method("name")``.
"""
from __future__ import annotations

from typing import Callable, Dict

_TRUNKS: Dict[str, Callable] = {}
_METHODS: Dict[str, type] = {}


def register_trunk(name: str):
    def deco(fn):
        if name in _TRUNKS:
            raise ValueError(f"trunk {name!r} is already registered")
        _TRUNKS[name] = fn
        return fn
    return deco


def register_method(name: str):
    def deco(cls):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls
    return deco


def list_trunks() -> list[str]:
    return sorted(_TRUNKS)


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(list_methods())}")
    return _METHODS[name]
