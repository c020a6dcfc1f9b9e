"""mdl: one frozen ImageNet trunk, a small adapter per visual domain, a versioned registry.

Installed as ONE top-level package; the repository keeps its folders and setuptools maps them
(pyproject.toml, package-dir): ``mdl.core`` is mdl_core/ (the science, no database), ``mdl.registry``
registry/, ``mdl.migrations`` migrations/, ``mdl.cli`` cli/. This folder is the package root.

Python API: ``from mdl import create_network`` (the same as ``mdl.core.create_network``).
"""
from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("mdl")
except metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

_API = ("create_network", "list_trunks", "list_methods", "MultiDomainNet", "register_trunk", "register_method")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:  # lazily, so `import mdl` (and `mdl --help`) stays free of torch
        from mdl import core

        return getattr(core, name)
    raise AttributeError(f"module 'mdl' has no attribute {name!r}")
