"""The bundled mini-decathlon: domains generated deterministically from a seed on first use, cached
under `$MDL_CACHE/builtin/` (default ~/.cache/mdl) as a raw `.npy` image array (loaded with
allow_pickle=False) plus a JSON index with labels, splits, classes and the array's sha256. No network.

`MDL_BUILTIN_SCALE` (default 1) shrinks every domain, for tests; it is part of the cache key.
"""
from __future__ import annotations

import functools
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mdl.core.data.errors import DataError
from mdl.files import atomic_path, atomic_write, sha256_file

CACHE_VERSION = "v4"  # bump whenever a generator changes its output
BUILTIN_PREFIX_BASE = 100  # above the decathlon's prefixes 1-10


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    generate: Callable
    flip: bool
    about: str

    @property
    def prefix(self) -> int:
        """Decathlon-style id prefix (ids are prefix * 10^7 + n): 101, 102, ... in alphabetical order. The
        official domains own 1-10, so a bundled domain's ids can never pass for a decathlon domain's."""
        return BUILTIN_PREFIX_BASE + sorted(registry()).index(self.name) + 1


def _specs() -> dict[str, BuiltinSpec]:
    from mdl.core.data.builtin import domains as d

    table = [
        ("source", d.gen_source, True, "pretraining source: 100 classes of glyphs, shapes and textures on clutter"),
        ("digits", d.gen_digits, False, "real handwritten digits (scikit-learn) with pose, colour and noise"),
        ("glyphs", d.gen_glyphs, False, "126 characters of 7 scripts rendered from DejaVu fonts, distorted"),
        ("textures", d.gen_textures, True, "10 texture families x 3 overlapping frequency bands"),
        ("signs", d.gen_signs, False, "43 traffic-sign-like shape/colour/symbol classes on clutter"),
        ("housenums", d.gen_housenums, False, "house-number digits with neighbours, on clutter"),
        ("photos", d.gen_photos, True, "patches of 16 real photographs shipped by scikit-image"),
        ("pedestrians", d.gen_pedestrians, True, "stick-figure pedestrian vs. street clutter (2 classes)"),
    ]
    return {n: BuiltinSpec(n, g, f, a) for n, g, f, a in table}


@functools.lru_cache(maxsize=None)
def registry() -> dict[str, BuiltinSpec]:
    """name -> BuiltinSpec, the pretraining source first."""
    return _specs()



def list_builtin() -> list[str]:
    """Builtin domain names; the pretraining source first."""
    return list(registry())


def get_spec(name: str) -> BuiltinSpec:
    reg = registry()
    if name not in reg:
        raise DataError(f"unknown builtin domain {name!r} (builtin domains: {', '.join(reg)})")
    return reg[name]


def cache_dir() -> Path:
    root = os.environ.get("MDL_CACHE") or "~/.cache/mdl"
    return Path(root).expanduser() / "builtin" / CACHE_VERSION


def _scale() -> float:
    try:
        s = float(os.environ.get("MDL_BUILTIN_SCALE", "1"))
    except ValueError:
        raise DataError(f"MDL_BUILTIN_SCALE must be a number, got {os.environ['MDL_BUILTIN_SCALE']!r}") from None
    if not 0 < s <= 1:
        raise DataError(f"MDL_BUILTIN_SCALE must be in (0, 1], got {s}")
    return s


def generate(name: str, seed: int = 0, scale: float = 1.0):
    """Generate a builtin domain in memory: (images uint8 [N,S,S,3], labels int64, split int8, classes)."""
    spec = get_spec(name)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))
    imgs, labels, split, classes = spec.generate(rng, scale)
    return np.ascontiguousarray(imgs, dtype=np.uint8), labels.astype(np.int64), split.astype(np.int8), list(classes)


def load_builtin(name: str, seed: int = 0, *, scale: float | None = None, log: Callable[[str], None] | None = None):
    """The cached domain (generated on first use). Returns a dict: images (uint8 [N,S,S,3]), labels, split
    (0 train / 1 val / 2 test), classes, flip, prefix, sha256, generated_s (None when read from cache)."""
    spec = get_spec(name)
    scale = _scale() if scale is None else scale
    key = f"{name}-seed{seed}" + ("" if scale == 1.0 else f"-scale{scale:g}")
    d = cache_dir()
    npy, idx = d / f"{key}.npy", d / f"{key}.json"
    meta = None
    if npy.is_file() and idx.is_file():
        try:
            meta = json.loads(idx.read_text())
            if meta.get("sha256") != sha256_file(npy):
                meta = None
        except (OSError, ValueError):
            meta = None
    generated_s = None
    if meta is None:
        if log:
            log(f"generating builtin domain {name!r} (seed {seed}) into {d} ...")
        t0 = time.perf_counter()
        imgs, labels, split, classes = generate(name, seed, scale)
        generated_s = time.perf_counter() - t0
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
            np.save(f, imgs, allow_pickle=False)
        meta = {"name": name, "seed": seed, "scale": scale, "classes": classes, "labels": labels.tolist(),
                "split": split.tolist(), "flip": spec.flip, "prefix": spec.prefix, "shape": list(imgs.shape),
                "sha256": sha256_file(npy), "generated_s": round(generated_s, 2)}
        atomic_write(idx, json.dumps(meta))
    images = np.load(npy, allow_pickle=False)
    if list(images.shape) != meta["shape"] or images.dtype != np.uint8:
        raise DataError(f"builtin cache {npy} does not match its index; delete it to regenerate")
    return {"images": images, "labels": np.asarray(meta["labels"], np.int64),
            "split": np.asarray(meta["split"], np.int8), "classes": meta["classes"], "flip": meta["flip"],
            "prefix": spec.prefix, "sha256": meta["sha256"], "generated_s": generated_s, "seed": seed,
            "scale": scale, "npy": str(npy)}


SPLIT_NAMES = ("train", "val", "test")


def image_ids(data) -> np.ndarray:
    """Decathlon-style image id of every item: prefix * 10^7 + running index (1-based)."""
    return data["prefix"] * 10**7 + np.arange(1, len(data["labels"]) + 1)


def export_builtin(name: str, out: Path, seed: int = 0, log=None) -> dict[str, int]:
    """Write a builtin domain in the decathlon layout under `out`."""
    from mdl.core.data.decathlon import write_decathlon

    data = load_builtin(name, seed, log=log)
    ids = image_ids(data)
    splits = {}
    for code, s in enumerate(SPLIT_NAMES):
        m = data["split"] == code
        splits[s] = (data["images"][m], data["labels"][m], ids[m])
    return write_decathlon(Path(out), name, data["prefix"], data["classes"], data["flip"], splits)
