"""`open_source(SRC)`: pick the reader from what SRC looks like and return a ready `DomainData`.

  builtin:NAME                  a bundled domain (generated on first use, cached)
  DIR with annotations/         the Visual Decathlon layout (pick the domain with `domain`)
  DIR with train-images-idx*    an MNIST-format (IDX) folder: Fashion-MNIST, MNIST (train, val split off, t10k test)
  DIR of class folders          an ImageFolder tree (one tree, or train/ val/ [test/] sub-trees)

Every source takes `train_images` / `val_images`: a seeded, stratified subset of that split, chosen
before any image is decoded (a study sweeps data sizes with it; the data record keeps both).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mdl.core.data.build import class_problems, build_domain, check_mean_std, check_options
from mdl.core.data.dataset import DomainData, SplitDataset, fingerprint
from mdl.core.data.errors import DataError
from mdl.core.data.splits import stratified_subset
from mdl.core.data.transforms import channel_stats, resize_shorter

BUILTIN_PREFIX = "builtin:"


def open_source(src: str, domain: str | None = None, *, image_size: int = 72, crop: int | None = None,
                on_bad_image: str = "fail", seed: int = 0, val_fraction: float = 0.2,
                mean_std: tuple | None = None, flip: bool | None = None,
                train_images: int | None = None, val_images: int | None = None,
                log: Callable[[str], None] | None = None) -> DomainData:
    """Read SRC into a DomainData. `mean_std` (from the registry) replaces the computed statistics;
    `flip` overrides the domain's flip policy (default: from the domain); `train_images` / `val_images`
    keep a seeded, stratified subset of that many images of the split (None: all)."""
    src = str(src)
    crop = check_options(image_size, crop, on_bad_image, val_fraction)
    sizes = {"train": train_images, "val": val_images}
    for split, n in sizes.items():
        if n is not None and (not isinstance(n, int) or n < 1):
            raise DataError(f"--{split}-images must be a positive integer, got {n!r}")
    if src.startswith(BUILTIN_PREFIX):
        name, scale = parse_builtin(src)
        if domain is not None and domain != name:
            raise DataError(f"--domain {domain!r} does not match {src!r}")
        return _open_builtin(src, name, image_size=image_size, crop=crop, mean_std=mean_std, flip=flip, log=log,
                             scale=scale, sizes=sizes, seed=seed)
    root = Path(src).expanduser()
    if not root.exists():
        raise DataError(f"data source not found: {src}", hint="give a folder or builtin:NAME")
    if not root.is_dir():
        raise DataError(f"data source {src} is not a folder (expected a decathlon root, an IDX folder or an ImageFolder tree)")
    from mdl.core.data.decathlon import is_decathlon, read_decathlon
    from mdl.core.data.idx import is_idx, read_idx

    if is_idx(root):
        name, classes, arrays, problems, digests = read_idx(root, src, seed=seed, val_fraction=val_fraction)
        return from_arrays(name=domain or name, source=src, kind="idx", classes=classes,
                           category_ids=None, arrays=_subset_arrays(arrays, sizes, seed), image_size=image_size,
                           crop=crop, mean_std=mean_std, flip=True if flip is None else bool(flip),
                           extra_records=[("idx", kind, digest) for kind, digest in digests.items()] +
                           [("classes", classes)], problems=problems)
    if is_decathlon(root):
        name, classes, category_ids, items, dflip, problems = read_decathlon(root, domain, src)
        kind = "decathlon"
    else:
        from mdl.core.data.imagefolder import read_imagefolder

        name, classes, items, problems = read_imagefolder(root, src, seed=seed, val_fraction=val_fraction)
        if domain is not None:
            name = domain
        category_ids, dflip, kind = None, True, "imagefolder"
    for split, n in sizes.items():
        if n is not None and split in items:
            keep = stratified_subset([lab for _, lab, _, _ in items[split]], n, seed, f"--{split}-images")
            items[split] = [items[split][i] for i in keep]
    return build_domain(name=name, source=src, kind=kind, classes=classes, category_ids=category_ids, items=items,
                        image_size=image_size, crop=crop, on_bad_image=on_bad_image, mean_std=mean_std,
                        flip=dflip if flip is None else bool(flip), problems=problems)


def _subset_arrays(arrays: dict, sizes: dict, seed: int) -> dict:
    out = dict(arrays)
    for split, n in sizes.items():
        if n is not None and split in arrays:
            x, y, ids = arrays[split]
            keep = stratified_subset(y, n, seed, f"--{split}-images")
            out[split] = (x[keep], y[keep], ids[keep])
    return out


def _resize_batch(images_nhwc, image_size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2)
    out = [resize_shorter(t[i : i + 1024].contiguous(), image_size) for i in range(0, t.shape[0], 1024)]
    return torch.cat(out).contiguous() if out else t.contiguous()


def from_arrays(*, name: str, source: str, kind: str, classes: list[str], category_ids: list[int] | None,
                arrays: dict, image_size: int, crop: int, mean_std, flip: bool, extra_records: list,
                problems: list[str]) -> DomainData:
    """A DomainData from in-memory images: ``arrays[split] = (uint8 [N, H, W, 3], labels, image ids)``
    (the builtin domains and IDX files, which need no per-file decoding)."""
    splits, id_lists, records, imgs = {}, {}, [], {}
    for s, (x, y, ids) in arrays.items():
        imgs[s] = _resize_batch(x, image_size)
        id_lists[s] = [int(i) for i in ids]
        records += [(s, i, int(lab)) for i, lab in zip(id_lists[s], np.asarray(y).tolist())]
    if mean_std is not None:
        mean, std = check_mean_std(mean_std)
        ms_source = "given"
    else:
        mean, std = channel_stats(imgs["train"])
        ms_source = "computed"
    for s, (_, y, _) in arrays.items():
        splits[s] = SplitDataset(imgs[s], torch.as_tensor(np.asarray(y), dtype=torch.long), crop=crop, mean=mean,
                                 std=std, flip=flip, train=(s == "train"))
    records += extra_records
    class_problems({s: ds.labels for s, ds in splits.items()}, classes, problems)
    h, w = next(iter(arrays.values()))[0].shape[1:3]
    return DomainData(
        name=name, source=source, kind=kind, classes=list(classes), category_ids=category_ids,
        splits=splits, image_ids=id_lists, mean=mean, std=std, flip=flip, image_size=image_size, crop=crop,
        fingerprint=fingerprint(records), problems=problems, skipped=0,
        size_range={"min": [int(w), int(h)], "max": [int(w), int(h)]}, mean_std_source=ms_source,
    )


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


def _open_builtin(src, name, *, image_size, crop, mean_std, flip, log, scale=None, sizes=None, seed=0) -> DomainData:
    from mdl.core.data.builtin import SPLIT_NAMES, image_ids, load_builtin

    data = load_builtin(name, log=log, scale=scale)
    ids = image_ids(data)
    arrays = {s: (data["images"][data["split"] == code], data["labels"][data["split"] == code],
                  ids[data["split"] == code]) for code, s in enumerate(SPLIT_NAMES) if (data["split"] == code).any()}
    prefix = data["prefix"]
    extra = [("builtin", name, data["seed"], data["scale"], data["sha256"])]  # a subset shows in the image ids
    return from_arrays(
        name=name, source=src, kind="builtin", classes=list(data["classes"]),
        category_ids=[prefix * 10**7 + i + 1 for i in range(len(data["classes"]))],
        arrays=_subset_arrays(arrays, sizes or {}, seed), image_size=image_size, crop=crop, mean_std=mean_std,
        flip=data["flip"] if flip is None else bool(flip), extra_records=extra, problems=[])
