"""Pieces every workflow needs: networks rebuilt from registered artifacts, data opened the way a
domain was trained, run keys for resumable training."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from mdl.registry.store import DomainVersionRecord, Registry, TrunkRecord
from mdl.workflows.events import note


def source_string(src: str) -> str:
    """How a data source is recorded: builtin names as given, folders as absolute paths."""
    return src if src.startswith("builtin:") else str(Path(src).expanduser().resolve())


def check_output_file(path, option: str) -> Path:
    """Fail before minutes of work, not after: ``path`` must name a file in an existing folder that takes
    one. ``option``: how the user gave it (for the message)."""
    from mdl.registry.artifacts import probe_writable

    path = Path(path).expanduser()
    folder = path.resolve().parent
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: folder {folder} does not exist")
    try:
        probe_writable(folder)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {folder} ({exc.strerror})") from None
    return path


def run_key(**fields: Any) -> tuple[str, dict]:
    key = json.loads(json.dumps(fields, sort_keys=True, default=str))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16], key


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
        note(f"{src}: {problem}", "warning")
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
