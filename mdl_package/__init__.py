"""mdl: one frozen ImageNet trunk, a small adapter per visual domain, a versioned registry.

Installed as ONE top-level package; the repository keeps its folders and setuptools maps them
(pyproject.toml, package-dir): ``mdl.core`` is mdl_core/ (the science, no database), ``mdl.registry``
registry/, ``mdl.migrations`` migrations/, ``mdl.workflows`` workflows/ (the application layer),
``mdl.cli`` cli/, ``mdl.serve`` serve/. This folder is the package root.

Python API: ``mdl.Client(home)`` (a registry and its workflows: add a domain, list, predict, score, the
network; mdl.api), and the networks themselves: ``mdl.create_network`` (the same as mdl.core's).
"""
from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("mdl")
except metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

_CORE = ("create_network", "list_trunks", "list_methods", "MultiDomainNet", "register_trunk", "register_method")
__all__ = ["Client", *_CORE]


def __getattr__(name: str):
    # lazily, so `import mdl` (and `mdl --help`) stays free of torch
    if name == "Client":
        from mdl.api import Client

        return Client
    if name in _CORE:
        from mdl import core

        return getattr(core, name)
    raise AttributeError(f"module 'mdl' has no attribute {name!r}")
