"""MNIST-format (IDX) folders, as Fashion-MNIST and MNIST ship: ``train-images-idx3-ubyte[.gz]`` with
``train-labels-idx1-ubyte[.gz]`` (the training split; a seeded, stratified share of it becomes val) and
optionally ``t10k-images-*`` / ``t10k-labels-*`` (test). A ``classes.txt`` beside them (one name per
line) names the labels; without one they are named by number.

IDX: two zero bytes, a type byte (0x08: unsigned byte, the only type these datasets use), the number of
dimensions, each dimension as a big-endian uint32, then the values in C order. Images are [N, H, W]
(grey) or [N, H, W, 3]; labels [N]. Every problem is a one-line DataError naming the file.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from mdl.core.data.errors import DataError
from mdl.core.data.splits import stratified_split

UBYTE = 0x08
PREFIXES = {"train": "train", "test": "t10k"}  # split -> file prefix


def _find(root: Path, prefix: str, kind: str) -> Path | None:
    """``{prefix}-{kind}-idx?-ubyte`` or its ``.gz`` (also the ``{prefix}-{kind}.idx?-ubyte`` spelling)."""
    found = sorted(p for p in root.glob(f"{prefix}-{kind}*") if p.is_file() and "idx" in p.name)
    return found[0] if found else None


def is_idx(root: Path) -> bool:
    return _find(root, "train", "images") is not None or _find(root, "train", "labels") is not None


def read_idx_file(path: Path, ndims: tuple[int, ...], digests: dict | None = None) -> np.ndarray:
    """The array in one IDX file (gzip or raw), its header and length checked; ``digests`` gets the
    sha256 of its uncompressed bytes under the file's kind (``train-images``), for the fingerprint."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read it ({type(exc).__name__}: {exc}); the file is truncated or corrupt") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})")
    dtype, nd = raw[2], raw[3]
    if dtype != UBYTE:
        raise DataError(f"{path}: IDX type 0x{dtype:02x} is not supported (expected 0x08, unsigned bytes)")
    if nd not in ndims:
        raise DataError(f"{path}: {nd} dimensions, expected {' or '.join(map(str, ndims))}")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {'x'.join(map(str, shape))} = {expected} bytes of data, "
                        f"the file holds {len(raw) - header} (truncated or corrupt)")
    if digests is not None:
        digests["-".join(path.name.split("-")[:2])] = hashlib.sha256(raw).hexdigest()
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_pair(root: Path, prefix: str, digests: dict) -> tuple[np.ndarray, np.ndarray, Path] | None:
    images, labels = _find(root, prefix, "images"), _find(root, prefix, "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have = images or labels
        raise DataError(f"{have}: its {'labels' if images else 'images'} file ({prefix}-"
                        f"{'labels' if images else 'images'}-idx?-ubyte[.gz]) is missing")
    x = read_idx_file(images, (3, 4), digests)
    if x.ndim == 4 and x.shape[3] not in (1, 3):
        raise DataError(f"{images}: {x.shape[3]} channels per pixel, expected 1 or 3")
    y = read_idx_file(labels, (1,), digests)
    if len(x) != len(y):
        raise DataError(f"{labels}: {len(y)} labels for {len(x)} images in {images.name}")
    if len(x) == 0:
        raise DataError(f"{images}: no images")
    return x, y, labels


def _classes(root: Path, train_labels: np.ndarray) -> list[str]:
    names = root / "classes.txt"
    if names.is_file():
        classes = [line.strip() for line in names.read_text().splitlines() if line.strip()]
        if len(set(classes)) != len(classes):
            raise DataError(f"{names}: class names repeat")
        return classes
    return [str(i) for i in range(int(train_labels.max()) + 1)]


def read_idx(root: Path, source: str, *, seed: int, val_fraction: float):
    """(name, classes, {split: (uint8 images [N, H, W, 3], int64 labels, index in its file)}, problems,
    {file kind: sha256 of its uncompressed bytes})."""
    pairs, digests = {}, {}
    for split, prefix in PREFIXES.items():
        pair = _read_pair(root, prefix, digests)
        if pair is not None:
            pairs[split] = pair
    if "train" not in pairs:
        raise DataError(f"{source}: an IDX folder needs train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    classes = _classes(root, pairs["train"][1])
    shape = pairs["train"][0].shape[1:]
    arrays = {}
    for split, (x, y, labels_file) in pairs.items():
        bad = np.flatnonzero(y >= len(classes))
        if len(bad):
            raise DataError(f"{labels_file}: label {int(y[bad[0]])} (sample {int(bad[0])}) is outside the "
                            f"{len(classes)} classes")
        if x.shape[1:] != shape:
            raise DataError(f"{labels_file.parent}: {split} images are {x.shape[1:]}, train images {shape}")
        rgb = np.repeat(x[..., None], 3, axis=3) if x.ndim == 3 else np.repeat(x, 3 // x.shape[3], axis=3)
        arrays[split] = (rgb, y.astype(np.int64), np.arange(len(y)))
    x, y, ids = arrays.pop("train")
    tr, va = stratified_split(y, val_fraction, seed)
    arrays = {"train": (x[tr], y[tr], ids[tr]), "val": (x[va], y[va], ids[va]), **arrays}
    problems = [f"only {len(classes)} class"] if len(classes) < 2 else []
    return root.resolve().name, classes, arrays, problems, digests
