"""Tiny on-disk datasets for the data-layer tests (16-24 px PNGs, written with Pillow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, rng, size=(20, 16), mode="RGB", base=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    ch = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
    if base is not None:
        a[..., :3 if ch >= 3 else 1] = (a[..., :3 if ch >= 3 else 1] // 4 + base).astype(np.uint8)
    Image.fromarray(a.squeeze(-1) if ch == 1 else a, mode).save(path)


def image_folder(root: Path, classes=("cat", "dog", "eel"), per_class=10, seed=0, size=(20, 16)):
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        for i in range(per_class):
            write_png(root / c / f"{i:03d}.png", rng, size=size, base=60 * k)
    return root


def decathlon(root: Path, domain="svhn", prefix=8, n_classes=3, sizes=(6, 3, 3), stripped=False, seed=0):
    """A decathlon-layout domain; returns {split: [(image_id, category_id)]}."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cats = [{"id": prefix * 10**7 + k + 1, "name": f"c{k}"} for k in range(n_classes)]
    truth = {}
    next_id = prefix * 10**7 + 1
    for split, n in zip(("train", "val", "test"), sizes):
        images, anns, truth[split] = [], [], []
        for i in range(n * n_classes):
            k = i % n_classes
            fname = f"data/{domain}/{split}/{i:05d}.png"
            write_png(root / fname, rng, size=(24, 18), base=50 * k)
            images.append({"id": next_id, "width": 24, "height": 18, "file_name": fname})
            anns.append({"id": next_id, "image_id": next_id, "category_id": cats[k]["id"]})
            truth[split].append((next_id, cats[k]["id"]))
            next_id += 1
        doc = {"images": images, "annotations": anns, "categories": cats}
        name = f"{domain}_{split}.json"
        if split == "test" and stripped:
            doc["annotations"] = []
            name = f"{domain}_test_stripped.json"
        (root / "annotations" / name).write_text(json.dumps(doc))
    return truth


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in the IDX format (MNIST's): magic 0 0 0x08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def idx_folder(root: Path, n_train=60, n_test=20, classes=3, size=12, seed=0, gz=True) -> Path:
    """A tiny MNIST-format folder: class k is an image of brightness ~60k plus noise."""
    import gzip

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        images = np.clip(labels[:, None, None] * 60 + rng.integers(0, 50, (n, size, size)), 0, 255).astype(np.uint8)
        for kind, arr, nd in (("images", images, 3), ("labels", labels.astype(np.uint8), 1)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return root
