"""Turn per-split file lists into a `DomainData`: decode once (threaded), handle bad images, compute
mean/std from the training split, fingerprint. Shared by the decathlon and ImageFolder readers."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from mdl.core.choices import ON_BAD_IMAGE
from mdl.core.data.dataset import DomainData, LazyImages, SplitDataset, finish_images, fingerprint, max_memory_bytes
from mdl.core.data.errors import DataError
from mdl.core.data.transforms import CMYK, channel_stats, decode_rgb, default_crop, resize_shorter



def check_options(image_size: int, crop: int | None, on_bad_image: str, val_fraction: float = 0.2) -> int:
    if on_bad_image not in ON_BAD_IMAGE:
        raise DataError(f"--on-bad-image must be 'skip' or 'fail', got {on_bad_image!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image size must be an integer of at least 8 px, got {image_size!r}")
    crop = default_crop(image_size) if crop is None else int(crop)
    if not 1 <= crop <= image_size:
        raise DataError(f"crop {crop} must be between 1 and the image size {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    return crop


def check_mean_std(mean_std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean, std = mean_std
        mean = tuple(float(v) for v in mean)
        std = tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise DataError(f"mean_std must be ((m,m,m), (s,s,s)), got {mean_std!r}") from None
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise DataError(f"mean_std must be three means and three positive stds, got {mean_std!r}")
    return mean, std


def _decode_one(path: str, image_size: int):
    try:
        img, channels = decode_rgb(path)
    except DataError as exc:
        return None, str(exc), 0, (0, 0)
    h, w = int(img.shape[1]), int(img.shape[2])
    return resize_shorter(img, image_size), None, channels, (w, h)


def build_domain(*, name: str, source: str, kind: str, classes: list[str], category_ids: list[int] | None,
                 items: dict[str, list[tuple[str, int, int, str]]], image_size: int, crop: int, on_bad_image: str,
                 mean_std, flip: bool, problems: list[str]) -> DomainData:
    """`items[split]` = [(absolute path, label or -1, image id, name for the fingerprint)]."""
    total = sum(len(v) for v in items.values())
    lazy = total * 3 * image_size * image_size > max_memory_bytes()
    split_images, split_labels, image_ids, file_names, records = {}, {}, {}, {}, []
    skipped, bad_examples, gray, alpha, cmyk, skipped_ids = 0, [], 0, 0, 0, {}
    smallest, largest = (10**18, 0, 0), (-1, 0, 0)  # (area, w, h) of real images, not per-axis extremes
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers) if not lazy else None
    try:
        for split, lst in items.items():
            if lazy:
                imgs = LazyImages([p for p, *_ in lst], image_size)
                kept = lst
                for _p, label, iid, fname in lst:
                    records.append((split, fname, label))
            else:
                results = list(pool.map(lambda it: _decode_one(it[0], image_size), lst, chunksize=16))
                imgs, kept = [], []
                for (path, label, iid, fname), (img, err, ch, (w, h)) in zip(lst, results):
                    if img is None:
                        if on_bad_image == "fail":
                            raise DataError(err, hint="use --on-bad-image skip to leave such images out")
                        skipped += 1
                        bad_examples.append(err)
                        skipped_ids.setdefault(split, []).append(iid)
                        continue
                    gray += ch in (1, 2)
                    alpha += ch in (2, 4)
                    cmyk += ch == CMYK
                    smallest, largest = min(smallest, (w * h, w, h)), max(largest, (w * h, w, h))
                    imgs.append(img)
                    kept.append((path, label, iid, fname))
                    records.append((split, fname, label, w, h))
                imgs = finish_images(imgs)
            split_images[split] = imgs
            split_labels[split] = torch.tensor([lab for _, lab, _, _ in kept], dtype=torch.long)
            image_ids[split] = [iid for _, _, iid, _ in kept]
            file_names[split] = [fname for _, _, _, fname in kept]
    finally:
        if pool is not None:
            pool.shutdown()
    if len(split_labels.get("train", ())) == 0:
        raise DataError(f"{source}: the training split of {name!r} has no usable images")
    if skipped:
        problems.append(f"skipped {skipped} undecodable image(s), first: {bad_examples[0]}")
    if gray or alpha or cmyk:
        problems.append(f"converted to RGB: {gray} grayscale, {alpha} with an alpha channel, {cmyk} CMYK")
    if lazy:
        problems.append("too large to hold in memory: images are decoded per batch, unreadable ones fail then")

    if mean_std is not None:
        mean, std = check_mean_std(mean_std)
        ms_source = "given"
    else:
        train = split_images["train"]
        if lazy:
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(train), generator=g)[:2000].tolist()
            train = [train[i] for i in idx]
        mean, std = channel_stats(train)
        ms_source = "computed"
    class_problems(split_labels, classes, problems)
    splits = {
        s: SplitDataset(split_images[s], split_labels[s], crop=crop, mean=mean, std=std, flip=flip, train=(s == "train"))
        for s in items
    }
    size_range = {} if lazy else {"min": list(smallest[1:]), "max": list(largest[1:])}
    return DomainData(
        name=name, source=source, kind=kind, classes=classes, category_ids=category_ids, splits=splits,
        image_ids=image_ids, mean=mean, std=std, flip=flip, image_size=image_size, crop=crop,
        fingerprint=fingerprint(records), problems=problems, skipped=skipped, size_range=size_range,
        mean_std_source=ms_source, file_names=file_names, skipped_ids=skipped_ids,
    )


def class_problems(split_labels: dict[str, torch.Tensor], classes: list[str], problems: list[str]) -> None:
    counts = torch.bincount(split_labels["train"][split_labels["train"] >= 0], minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        problems.append(f"{len(empty)} class(es) have no training images: {', '.join(empty[:5])}"
                        + (" ..." if len(empty) > 5 else ""))
    nz = counts[counts > 0]
    if len(nz) > 1 and int(nz.max()) > 10 * int(nz.min()):
        problems.append(f"classes are very unbalanced in train: {int(nz.min())} to {int(nz.max())} images per class")
    if "val" in split_labels and len(split_labels["val"]) == 0:
        problems.append("the validation split is empty")
