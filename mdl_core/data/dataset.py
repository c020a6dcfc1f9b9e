"""What every reader returns (`DomainData`), the split datasets, and the DataLoader factory.

Images are decoded once and kept as uint8 tensors already resized to `image_size` (one stacked tensor
when they all have the same size, else a list); only crop/flip/normalise run per batch. Sources too
large for memory (see `MDL_DATA_MAX_BYTES`) are decoded lazily per item instead.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from mdl.core.data.errors import DataError
from mdl.core.data.transforms import BatchAugment, decode_rgb, eval_transform, resize_shorter, train_transform


class LazyImages:
    """Decode-on-access image list (for sources too large to hold decoded in memory)."""

    def __init__(self, paths: Sequence[str], image_size: int):
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img, _ = decode_rgb(self.paths[i])
        return resize_shorter(img, self.image_size)


class ConcatImages:
    """Indexable view over several image containers (tensors, lists, LazyImages), in order."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.offsets = [0]
        for p in self.parts:
            self.offsets.append(self.offsets[-1] + len(p))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int):
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = next(j for j in range(len(self.parts)) if i < self.offsets[j + 1])
        return self.parts[k][i - self.offsets[k]]


class SplitDataset(Dataset):
    """One split of a domain. Item: (float tensor [3,crop,crop] normalised, int label; -1 if unlabelled).

    `train=True` applies the training policy (random crop + flip, or centre crop only for no-flip
    domains); `view(train=...)` gives the same images under the other policy without copying them."""

    def __init__(self, images, labels: torch.Tensor, *, crop: int, mean, std, flip: bool, train: bool):
        self.images = images  # uint8 [N,3,H,W] tensor, list of [3,H,W] tensors, or LazyImages
        self.labels = labels.to(torch.long)
        self.crop, self.mean, self.std, self.flip, self.train = crop, tuple(mean), tuple(std), flip, train
        self._item_tf = (train_transform if train else lambda c, m, s, f: eval_transform(c, m, s))(
            crop, mean, std, flip
        )
        self._batch_tf = BatchAugment(crop, mean, std, train=train, flip=flip)

    def view(self, *, train: bool) -> "SplitDataset":
        return SplitDataset(self.images, self.labels, crop=self.crop, mean=self.mean, std=self.std,
                            flip=self.flip, train=train)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        return self._item_tf(self.images[i]), int(self.labels[i])

    def __getitems__(self, indices: list[int]):
        """Batched fetch (DataLoader calls this): one normalisation per batch instead of per image."""
        imgs = [self.images[i] for i in indices]
        batch = self._batch_tf(imgs)
        labels = self.labels[indices].tolist()
        return list(zip(batch.unbind(0), labels))

    def uint8(self, i: int) -> torch.Tensor:
        return self.images[i]


@dataclass
class DomainData:
    """A domain as read from a source: label order, splits, statistics, and what was wrong with it."""

    name: str
    source: str
    kind: str  # "decathlon" | "imagefolder" | "builtin"
    classes: list[str]
    category_ids: list[int] | None
    splits: dict[str, SplitDataset]
    image_ids: dict[str, list[int]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool
    image_size: int
    crop: int
    fingerprint: str
    problems: list[str] = field(default_factory=list)
    skipped: int = 0
    size_range: dict[str, list[int]] = field(default_factory=dict)  # {"min": [w,h], "max": [w,h]}: smallest/largest image by area
    mean_std_source: str = "computed"  # "computed" from the training split, or "given"
    file_names: dict[str, list[str]] = field(default_factory=dict)  # per split, where known
    skipped_ids: dict[str, list[int]] = field(default_factory=dict)  # per split: ids of unreadable images left out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, split: str) -> list[int]:
        labels = self.splits[split].labels
        labels = labels[labels >= 0]
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    def summary(self) -> dict[str, Any]:
        """Everything `mdl data inspect --json` prints."""
        splits = {}
        for name, ds in self.splits.items():
            labelled = int((ds.labels >= 0).sum())
            entry: dict[str, Any] = {"images": len(ds), "labelled": labelled}
            if labelled:
                counts = self.class_counts(name)
                entry["per_class_min"] = min(counts)
                entry["per_class_max"] = max(counts)
            splits[name] = entry
        return {
            "name": self.name,
            "source": self.source,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "category_ids": list(self.category_ids) if self.category_ids is not None else None,
            "splits": splits,
            "image_size_range": self.size_range,
            "image_size": self.image_size,
            "crop": self.crop,
            "flip": self.flip,
            "mean": list(self.mean),
            "std": list(self.std),
            "mean_std_source": self.mean_std_source,
            "fingerprint": self.fingerprint,
            "skipped": self.skipped,
            "problems": list(self.problems),
        }

    def with_crop(self, crop: int) -> "DomainData":
        """The same images under another crop size (``crop == image_size``: no crop, the references'
        policy for no-flip domains). Nothing is decoded again."""
        if not 1 <= crop <= self.image_size:
            raise DataError(f"crop {crop} must be between 1 and the image size {self.image_size}")
        splits = {s: SplitDataset(ds.images, ds.labels, crop=crop, mean=ds.mean, std=ds.std, flip=ds.flip,
                                  train=ds.train) for s, ds in self.splits.items()}
        return replace(self, crop=crop, splits=splits)

    def merged(self, names: Sequence[str]) -> SplitDataset:
        """Several splits as one training split (e.g. train+val for a test submission)."""
        parts = [self.splits[n] for n in names]
        first = parts[0]
        return SplitDataset(ConcatImages([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                            crop=first.crop, mean=first.mean, std=first.std, flip=first.flip, train=True)

    def stats(self) -> dict[str, Any]:
        """What a registry stores to preprocess images of this domain later (see `load_images`)."""
        return {"mean": list(self.mean), "std": list(self.std), "image_size": self.image_size,
                "crop": self.crop, "flip": self.flip}


def fingerprint(records: list[tuple]) -> str:
    """sha256 over sorted (split, file/id, label, width, height) records."""
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: json.dumps(r)):
        h.update(json.dumps(rec, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def max_memory_bytes() -> int:
    return int(float(os.environ.get("MDL_DATA_MAX_BYTES", 6e9)))


def make_loader(dd: DomainData, split: str, batch_size: int, *, train: bool, workers: int = 0, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """Batches of (float [B,3,crop,crop], long [B]). `train=True`: shuffled, training augmentation;
    `train=False`: in order, evaluation preprocessing. Shuffling and worker seeds come from `seed`."""
    if split not in dd.splits:
        raise DataError(f"domain {dd.name!r} has no {split!r} split (it has: {', '.join(dd.splits)})")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    ds = dd.splits[split].view(train=train)
    g = torch.Generator()
    g.manual_seed(int(seed))
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        generator=g,
        num_workers=int(workers),
        drop_last=drop_last,
        persistent_workers=int(workers) > 0,
    )


def _stat(obj, key):
    if isinstance(obj, dict):
        return obj[key]
    return getattr(obj, key)


def load_images(paths: Sequence[str | Path], dd_or_stats) -> torch.Tensor:
    """Evaluation preprocessing of image files (for `mdl predict`): decode (any of RGB, grayscale, RGBA),
    resize the shorter side to image_size, centre crop, normalise. `dd_or_stats` is a DomainData or a
    dict with mean, std, image_size (and optionally crop). Returns float [N,3,crop,crop]."""
    if not paths:
        raise DataError("no image files given")
    return preprocess([decode_rgb(p)[0] for p in paths], dd_or_stats)


def preprocess(images: Sequence[torch.Tensor], dd_or_stats) -> torch.Tensor:
    """:func:`load_images` for decoded uint8 RGB images [3,H,W]."""
    try:
        mean, std = _stat(dd_or_stats, "mean"), _stat(dd_or_stats, "std")
        image_size = int(_stat(dd_or_stats, "image_size"))
    except (KeyError, AttributeError) as exc:
        raise DataError(f"preprocessing statistics are missing {exc}") from None
    if mean is None or std is None:
        raise DataError("no normalisation statistics (mean/std) are recorded for this domain: it was imported "
                        "without them; re-train it with `mdl add-domain` on its data")
    try:
        crop = int(_stat(dd_or_stats, "crop"))
    except (KeyError, AttributeError):
        from mdl.core.data.transforms import default_crop

        crop = default_crop(image_size)
    return eval_batch(images, mean, std, image_size, crop)


def eval_batch(images: Sequence[torch.Tensor], mean, std, image_size: int, crop: int) -> torch.Tensor:
    """Evaluation preprocessing of decoded uint8 RGB images [3,H,W] (what `load_images` does after
    decoding; `mdl serve` decodes uploads itself): resize the shorter side, centre crop, normalise."""
    return BatchAugment(crop, mean, std, train=False, flip=False)([resize_shorter(img, image_size) for img in images])


def finish_images(imgs: list[torch.Tensor]):
    """Stack when every image has the same size (the common case), else keep the list."""
    if imgs and all(t.shape == imgs[0].shape for t in imgs):
        return torch.stack(imgs)
    return imgs
