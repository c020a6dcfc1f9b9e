"""Data layer: everything that turns `--data SRC` into training batches.

    from mdl.core.data import open_source, make_loader, load_images, list_builtin, DataError
    dd = open_source("builtin:digits", image_size=32)
    loader = make_loader(dd, "train", 128, train=True, workers=2)

Heavy imports (torch, torchvision) happen on first use of a function, not on `import mdl.core.data`.
"""
from __future__ import annotations

from mdl.core.data.errors import DataError

__all__ = ["open_source", "make_loader", "load_images", "list_builtin", "export_builtin", "DataError",
           "DomainData", "NO_FLIP_DOMAINS", "default_crop"]


def __getattr__(name):
    if name == "open_source":
        from mdl.core.data.sources import open_source

        return open_source
    if name in ("make_loader", "load_images", "DomainData"):
        from mdl.core.data import dataset

        return getattr(dataset, name)
    if name in ("list_builtin", "export_builtin"):
        from mdl.core.data import builtin

        return getattr(builtin, name)
    if name in ("NO_FLIP_DOMAINS", "default_crop"):
        from mdl.core.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'mdl.core.data' has no attribute {name!r}")
