"""`open_source(SRC)`: pick the reader from what SRC looks like and return a ready `DomainData`.

  builtin:NAME                  a bundled domain (generated on first use, cached)
  DIR with annotations/         the Visual Decathlon layout (pick the domain with `domain`)
  DIR of class folders          an ImageFolder tree (one tree, or train/ val/ [test/] sub-trees)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from mdl.core.data.build import build_domain, check_mean_std, check_options
from mdl.core.data.dataset import DomainData, SplitDataset, fingerprint
from mdl.core.data.errors import DataError
from mdl.core.data.transforms import channel_stats, resize_shorter

BUILTIN_PREFIX = "builtin:"


def open_source(src: str, domain: str | None = None, *, image_size: int = 72, crop: int | None = None,
                on_bad_image: str = "fail", seed: int = 0, val_fraction: float = 0.2,
                mean_std: tuple | None = None, flip: bool | None = None,
                log: Callable[[str], None] | None = None) -> DomainData:
    """Read SRC into a DomainData. `mean_std` (from the registry) replaces the computed statistics;
    `flip` overrides the domain's flip policy (default: from the domain)."""
    src = str(src)
    crop = check_options(image_size, crop, on_bad_image, val_fraction)
    if src.startswith(BUILTIN_PREFIX):
        name, scale = parse_builtin(src)
        if domain is not None and domain != name:
            raise DataError(f"--domain {domain!r} does not match {src!r}")
        return _open_builtin(src, name, image_size=image_size, crop=crop, mean_std=mean_std, flip=flip, log=log,
                             scale=scale)
    root = Path(src).expanduser()
    if not root.exists():
        raise DataError(f"data source not found: {src}", hint="give a folder or builtin:NAME")
    if not root.is_dir():
        raise DataError(f"data source {src} is not a folder (expected a decathlon root or an ImageFolder tree)")
    from mdl.core.data.decathlon import is_decathlon, read_decathlon

    if is_decathlon(root):
        name, classes, category_ids, items, dflip, problems = read_decathlon(root, domain, src)
        kind = "decathlon"
    else:
        from mdl.core.data.imagefolder import read_imagefolder

        name, classes, items, problems = read_imagefolder(root, src, seed=seed, val_fraction=val_fraction)
        if domain is not None:
            name = domain
        category_ids, dflip, kind = None, True, "imagefolder"
    return build_domain(name=name, source=src, kind=kind, classes=classes, category_ids=category_ids, items=items,
                        image_size=image_size, crop=crop, on_bad_image=on_bad_image, mean_std=mean_std,
                        flip=dflip if flip is None else bool(flip), problems=problems)


def _resize_batch(images_nhwc, image_size: int) -> torch.Tensor:
    t = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
    out = [resize_shorter(t[i : i + 1024].contiguous(), image_size) for i in range(0, t.shape[0], 1024)]
    return torch.cat(out).contiguous() if out else t.contiguous()


def parse_builtin(src: str) -> tuple[str, float | None]:
    """``builtin:NAME`` or ``builtin:NAME?scale=S`` (a smaller copy of the domain, 0 < S <= 1; recorded
    in the source string so scoring re-opens the same images) -> (NAME, S or None for $MDL_BUILTIN_SCALE)."""
    name, _, query = src[len(BUILTIN_PREFIX):].partition("?")
    if not query:
        return name, None
    key, _, value = query.partition("=")
    try:
        scale = float(value) if key == "scale" else None
    except ValueError:
        scale = None
    if scale is None or not 0 < scale <= 1:
        raise DataError(f"bad builtin source {src!r}: expected builtin:NAME or builtin:NAME?scale=S with 0 < S <= 1")
    return name, scale


def _open_builtin(src, name, *, image_size, crop, mean_std, flip, log, scale=None) -> DomainData:
    from mdl.core.data.builtin import SPLIT_NAMES, image_ids, load_builtin

    data = load_builtin(name, log=log, scale=scale)
    ids = image_ids(data)
    h, w = data["images"].shape[1:3]
    splits, id_lists, records, imgs = {}, {}, [], {}
    for code, s in enumerate(SPLIT_NAMES):
        m = data["split"] == code
        if not m.any():
            continue
        imgs[s] = _resize_batch(data["images"][m], image_size)
        labels = torch.from_numpy(data["labels"][m])
        id_lists[s] = ids[m].tolist()
        records += [(s, i, int(lab)) for i, lab in zip(id_lists[s], labels.tolist())]
    if mean_std is not None:
        mean, std = check_mean_std(mean_std)
        ms_source = "given"
    else:
        mean, std = channel_stats(imgs["train"])
        ms_source = "computed"
    dflip = data["flip"] if flip is None else bool(flip)
    for s in imgs:
        lab = torch.from_numpy(data["labels"][data["split"] == SPLIT_NAMES.index(s)])
        splits[s] = SplitDataset(imgs[s], lab, crop=crop, mean=mean, std=std, flip=dflip, train=(s == "train"))
    prefix = data["prefix"]
    records.append(("builtin", name, data["seed"], data["scale"], data["sha256"]))
    return DomainData(
        name=name, source=src, kind="builtin", classes=list(data["classes"]),
        category_ids=[prefix * 10**7 + i + 1 for i in range(len(data["classes"]))],
        splits=splits, image_ids=id_lists, mean=mean, std=std, flip=dflip, image_size=image_size, crop=crop,
        fingerprint=fingerprint(records), problems=[], skipped=0,
        size_range={"min": [int(w), int(h)], "max": [int(w), int(h)]}, mean_std_source=ms_source,
    )
