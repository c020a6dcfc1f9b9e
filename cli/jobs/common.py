"""Pieces every workflow needs: networks rebuilt from registered artifacts, data opened the way a
domain was trained, run folders for resumable training, progress bars."""
from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mdl.cli._output import err
from mdl.registry.store import DomainVersionRecord, Registry, TrunkRecord

# A fresh registry's trunk: ImageNet EfficientNet-Lite0, imported offline from its PyPI package on first need.
DEFAULT_TRUNK = "timm/tf_efficientnet_lite0"
# The method a trunk's own source domain is registered with: the first of these the trunk can host.
SOURCE_METHODS = ("dw", "bn", "classifier-only")
TRUNK_RE = re.compile(r"^(?P<arch>[A-Za-z0-9_./-]+?)(?::v(?P<version>\d+))?$")


BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # buffers, not parameters


def learnable_params(tensors: dict) -> int:
    """Parameters in a trunk state dict (what a trunk row's num_params counts): BN statistics excluded."""
    return sum(v.numel() for k, v in tensors.items() if not k.endswith(BN_STATISTICS))


def source_method(arch: str, width: float = 1.0) -> str:
    return next(m for m in SOURCE_METHODS if compatible(arch, m, width))


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)


def source_string(src: str) -> str:
    """How a data source is recorded: builtin names as given, folders as absolute paths."""
    return src if src.startswith("builtin:") else str(Path(src).expanduser().resolve())


def run_key(**fields: Any) -> tuple[str, dict]:
    key = json.loads(json.dumps(fields, sort_keys=True, default=str))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16], key


@functools.lru_cache(maxsize=None)
def compatible(arch: str, method: str, width: float = 1.0) -> bool:
    """Whether `method`'s rule applies to trunk `arch` (the method reads the trunk's modules)."""
    from mdl.core.nets import method_applies

    return method_applies(arch, method, width)


def pick_trunk(reg: Registry, method: str, trunk: str | None = None) -> TrunkRecord:
    """`--trunk ARCH[:vN]` if given, else the newest trunk the method can use. A registry without any
    trunk gets the default ImageNet trunk imported first (offline)."""
    from mdl.core import list_methods

    if method not in list_methods():
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(list_methods())}")
    if trunk:
        m = TRUNK_RE.match(trunk)
        if not m:
            raise ValueError(f"--trunk {trunk!r}: expected ARCH or ARCH:vN (e.g. {DEFAULT_TRUNK}:v1)")
        arch, ver = m["arch"], m["version"]
        if arch == DEFAULT_TRUNK and ver is None and not any(t.arch == arch for t in reg.trunks()):
            return import_default_trunk(reg)
        record = reg.trunk(arch, int(ver) if ver else None)
        if not compatible(record.arch, method, record.width):
            raise ValueError(f"method {method!r} cannot use trunk {record.label}")
        return record
    trunks = reg.trunks()
    for record in sorted(trunks, key=lambda t: t.created_at, reverse=True):
        if compatible(record.arch, method, record.width):
            return record
    if not trunks:
        record = import_default_trunk(reg)
        if compatible(record.arch, method, record.width):
            return record
    archs = ", ".join(sorted({t.arch for t in reg.trunks()}))
    raise ValueError(f"no registered trunk can host method {method!r} (registered: {archs})")


def import_default_trunk(reg: Registry) -> TrunkRecord:
    from mdl.cli.jobs.trunks import import_trunk

    err.print(f"No trunk registered yet: importing the default, {DEFAULT_TRUNK} with ImageNet weights (offline).")
    return import_trunk(reg, arch=DEFAULT_TRUNK)[0]


class NetworkLoader:
    """Builds networks from registered artifacts, loading each trunk's tensors once."""

    def __init__(self, reg: Registry):
        self.reg = reg
        self._trunks: dict[int, dict] = {}

    def trunk_tensors(self, trunk: TrunkRecord) -> dict:
        if trunk.id not in self._trunks:
            self._trunks[trunk.id] = self.reg.load_tensors(trunk.artifact)
        return self._trunks[trunk.id]

    def network(self, trunk: TrunkRecord, method: str, versions: Iterable[DomainVersionRecord] = ()):
        from mdl.core import create_network

        net = create_network(trunk.arch, method=method, domains={}, width=trunk.width)
        net.load_trunk_state_dict(self.trunk_tensors(trunk))
        for v in versions:
            self.add_version(net, v)
        return net

    def add_version(self, net, v: DomainVersionRecord) -> None:
        from mdl.core.nets.legacy import upgrade_domain_tensors
        from mdl.registry.models import TENSOR_LAYOUT

        net.add_domain(v.name, v.num_classes)
        tensors = self.reg.load_tensors(v.artifact)
        if v.layout < TENSOR_LAYOUT:  # written before trunks became modules: rename, exactly
            tensors = upgrade_domain_tensors(tensors, net.domain_state_dict(v.name))
        elif v.layout > TENSOR_LAYOUT:
            raise ValueError(f"{v.name} v{v.version} was written by a newer mdl (tensor layout {v.layout}); upgrade mdl")
        net.load_domain_state_dict(v.name, tensors)


def trunk_mean_std(trunk: TrunkRecord):
    """The normalisation a pretrained trunk's weights expect (None: computed from the domain's data)."""
    cfg = trunk.config.get("pretrained_cfg") or {}
    return (tuple(cfg["mean"]), tuple(cfg["std"])) if "mean" in cfg and "std" in cfg else None


def open_data(src: str, name: str, *, image_size: int, mean_std=None, on_bad_image: str = "fail",
              seed: int = 0, train_images: int | None = None, val_images: int | None = None):
    from mdl.core.data import open_source

    dd = open_source(src, name, image_size=image_size, on_bad_image=on_bad_image, seed=seed, mean_std=mean_std,
                     train_images=train_images, val_images=val_images)
    for problem in dd.problems:  # what `mdl data inspect` would point out (skipped images among them)
        err.print(f"[yellow]warning:[/] {src}: {problem}")
    return dd


def open_version_data(v: DomainVersionRecord, on_bad_image: str = "skip"):
    """The data a version was trained on, preprocessed with its recorded statistics."""
    d = v.data
    return open_data(d["source"], d.get("domain") or v.name, image_size=d["image_size"],
                     mean_std=(tuple(d["mean"]), tuple(d["std"])), on_bad_image=on_bad_image, seed=d.get("seed", 0),
                     train_images=(d.get("subset") or {}).get("train"), val_images=(d.get("subset") or {}).get("val"))


def data_record(dd, src: str, seed: int, train_images: int | None = None, val_images: int | None = None) -> dict:
    """What the registry keeps about a domain's data (so evaluation and prediction preprocess alike, and
    scoring re-opens the same subsets)."""
    subset = {k: v for k, v in (("train", train_images), ("val", val_images)) if v is not None}
    return {**({"subset": subset} if subset else {}),
        "source": source_string(src), "domain": dd.name, "fingerprint": dd.fingerprint,
        "mean": list(dd.mean), "std": list(dd.std),
        "image_size": dd.image_size, "crop": dd.crop, "flip": dd.flip, "category_ids": dd.category_ids,
        "sizes": {split: len(ds) for split, ds in dd.splits.items()}, "skipped": dd.skipped, "seed": seed,
    }


def loaders(dd, batch_size: int, workers: int, seed: int, train_on: str = "train"):
    """(train loader, validation loader). ``train_on="train+val"``: one training split of both and no
    validation loader (None): the run keeps its last epoch."""
    from dataclasses import replace

    from mdl.core.data import make_loader

    if "val" not in dd.splits or len(dd.splits["val"]) == 0:
        raise ValueError(f"{dd.source} has no validation images; a validation split is needed to pick the best epoch"
                         if train_on == "train" else f"{dd.source} has no validation images to train on")
    if train_on == "train+val":
        dd = replace(dd, splits={**dd.splits, train_on: dd.merged(["train", "val"])})
    # a last batch of one sample cannot give batch-norm statistics where the trunk pools to 1x1: drop it
    lone = len(dd.splits[train_on]) % batch_size == 1 and len(dd.splits[train_on]) > 1
    train = make_loader(dd, train_on, batch_size, train=True, workers=workers, seed=seed, drop_last=lone)
    if train_on == "train+val":
        return train, None
    val = make_loader(dd, "val", max(batch_size, 256), train=False, workers=workers)
    return train, val
