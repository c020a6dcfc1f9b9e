"""Pieces every workflow needs: networks rebuilt from registered artifacts, data opened the way a
domain was trained, run folders for resumable training, progress bars."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli._output import err
from registry.errors import NotFound
from registry.store import DomainVersionRecord, Registry, TrunkRecord

# The method a trunk's own source domain is registered with (the paper's for the depthwise trunk).
SOURCE_METHOD = {"resnet26_dw": "dw", "resnet26": "bn"}


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)


def source_string(src: str) -> str:
    """How a data source is recorded: builtin names as given, folders as absolute paths."""
    return src if src.startswith("builtin:") else str(Path(src).expanduser().resolve())


def run_key(**fields: Any) -> tuple[str, dict]:
    key = json.loads(json.dumps(fields, sort_keys=True, default=str))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16], key


def compatible(arch: str, method: str) -> bool:
    """Whether `method`'s parameter partition applies to trunk `arch` (the method registry says)."""
    import mdl_core.nets  # noqa: F401  (registers trunks and methods)
    from mdl_core.nets.registry import get_method

    try:
        get_method(method)().check_trunk(arch)
    except ValueError:
        return False
    return True


def pick_trunk(reg: Registry, method: str, trunk: str | None = None) -> TrunkRecord:
    """`--trunk ARCH[:vN]` if given, else the newest trunk the method can use."""
    from mdl_core import list_methods

    if method not in list_methods():
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(list_methods())}")
    if trunk:
        arch, _, ver = trunk.partition(":v")
        record = reg.trunk(arch, int(ver) if ver.isdigit() else None)
        if not compatible(record.arch, method):
            raise ValueError(f"method {method!r} cannot use trunk {record.label}")
        return record
    trunks = reg.trunks()
    for record in sorted(trunks, key=lambda t: t.created_at, reverse=True):
        if compatible(record.arch, method):
            return record
    if not trunks:
        raise NotFound(f"no trunk in {reg.home} yet", hint=f"run `mdl pretrain --data SRC --home {reg.home}` first")
    archs = ", ".join(sorted({t.arch for t in trunks}))
    raise ValueError(f"no registered trunk can host method {method!r} (registered: {archs})")


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
        from mdl_core import create_network

        net = create_network(trunk.arch, method=method, domains={}, width=trunk.width)
        net.load_trunk_state_dict(self.trunk_tensors(trunk))
        for v in versions:
            self.add_version(net, v)
        return net

    def add_version(self, net, v: DomainVersionRecord) -> None:
        net.add_domain(v.name, v.num_classes)
        net.load_domain_state_dict(v.name, self.reg.load_tensors(v.artifact))


def open_data(src: str, name: str, *, image_size: int, mean_std=None, on_bad_image: str = "fail",
              seed: int = 0):
    from mdl_core.data import open_source

    dd = open_source(src, name, image_size=image_size, on_bad_image=on_bad_image, seed=seed, mean_std=mean_std)
    if dd.skipped:
        err.print(f"[yellow]skipped {dd.skipped} undecodable image(s)[/] in {src}")
    return dd


def open_version_data(v: DomainVersionRecord, on_bad_image: str = "skip"):
    """The data a version was trained on, preprocessed with its recorded statistics."""
    d = v.data
    return open_data(d["source"], v.name, image_size=d["image_size"], mean_std=(tuple(d["mean"]), tuple(d["std"])),
                     on_bad_image=on_bad_image, seed=d.get("seed", 0))


def data_record(dd, src: str, seed: int) -> dict:
    """What the registry keeps about a domain's data (so evaluation and prediction preprocess alike)."""
    return {
        "source": source_string(src), "fingerprint": dd.fingerprint, "mean": list(dd.mean), "std": list(dd.std),
        "image_size": dd.image_size, "crop": dd.crop, "flip": dd.flip, "category_ids": dd.category_ids,
        "sizes": {split: len(ds) for split, ds in dd.splits.items()}, "skipped": dd.skipped, "seed": seed,
    }


def loaders(dd, batch_size: int, workers: int, seed: int):
    from mdl_core.data import make_loader

    if "val" not in dd.splits or len(dd.splits["val"]) == 0:
        raise ValueError(f"{dd.source} has no validation images; a validation split is needed to pick the best epoch")
    train = make_loader(dd, "train", batch_size, train=True, workers=workers, seed=seed, drop_last=False)
    val = make_loader(dd, "val", max(batch_size, 256), train=False, workers=workers)
    return train, val
