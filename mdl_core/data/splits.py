"""Seeded, stratified index selections shared by every reader: the train/val split of a source without
one, and the subsets a study takes of a split (``--train-images N``, ``--val-images N``)."""
from __future__ import annotations

import numpy as np

from mdl.core.data.errors import DataError


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): per class a seeded shuffle, round(n * val_fraction) to val (at least one
    when the class has two or more images, never all of them)."""
    labels_a = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels_a):
        idx = np.flatnonzero(labels_a == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)


def stratified_subset(labels, n: int, seed: int, what: str = "split") -> list[int]:
    """Sorted indices of ``n`` samples, each class represented in proportion to its share (largest
    remainders get the leftover places, ties broken by the seeded order), chosen by a seeded shuffle
    per class. ``n`` at least the split's size: every index."""
    labels_a = np.asarray(labels)
    if n < 1:
        raise DataError(f"{what}: a subset needs at least 1 image, got {n}")
    if n >= len(labels_a):
        return list(range(len(labels_a)))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels_a, return_counts=True)
    share = counts * n / counts.sum()
    take = np.floor(share).astype(int)
    order = np.lexsort((rng.permutation(len(classes)), -(share - take)))  # biggest remainder first
    take[order[: n - int(take.sum())]] += 1
    chosen = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels_a == c)
        chosen += idx[rng.permutation(len(idx))[:k]].tolist()
    return sorted(chosen)
