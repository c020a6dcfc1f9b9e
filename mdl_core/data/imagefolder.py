"""ImageFolder trees: `ROOT/<class>/*.png` (one tree: a seeded, stratified train/val split) or
`ROOT/{train,val[,test]}/<class>/*` (given splits; without val/, val is split off train the same way).

Labels are the class folder names in sorted order. There are no official category ids: `category_ids`
is None (`label` is the id)."""
from __future__ import annotations

from pathlib import Path

from mdl.core.data.errors import DataError
from mdl.core.data.splits import stratified_split

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLIT_NAMES = ("train", "val", "test")


def _visible_dirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in f.relative_to(d).parts))


def _read_tree(root: Path) -> dict[str, list[Path]]:
    dirs = _visible_dirs(root)
    if not dirs:
        raise DataError(f"{root} has no class folders (expected <class>/<image> or train/<class>/<image>)")
    tree = {}
    for d in dirs:
        files = _images_in(d)
        if not files:
            raise DataError(f"class folder {d} has no images ({', '.join(sorted(IMAGE_EXTS))})")
        tree[d.name] = files
    return tree


def read_imagefolder(root: Path, source: str, *, seed: int, val_fraction: float):
    """Returns (name, classes, items, problems) for `build_domain`."""
    sub = {d.name for d in _visible_dirs(root)}
    problems: list[str] = []
    name = root.resolve().name
    if "train" in sub:
        extra = sub - set(SPLIT_NAMES)
        if extra:
            problems.append(f"ignored folders beside train/: {', '.join(sorted(extra))}")
        trees = {s: _read_tree(root / s) for s in SPLIT_NAMES if s in sub}
        classes = sorted(trees["train"])
        index = {c: i for i, c in enumerate(classes)}
        for s, tree in trees.items():
            for c in tree:
                if c not in index:
                    raise DataError(f"class folder {root / s / c} is not a class of train/ (label outside the categories)")
        split_files = {s: [(f, index[c]) for c, files in sorted(tree.items()) for f in files] for s, tree in trees.items()}
        if "val" not in split_files:
            problems.append(f"no val/ folder: {val_fraction:.0%} of train split off (seed {seed})")
            split_files = _split(split_files, val_fraction, seed)
    else:
        tree = _read_tree(root)
        classes = sorted(tree)
        split_files = _split({"train": [(f, i) for i, c in enumerate(classes) for f in tree[c]]}, val_fraction, seed)
    if len(classes) < 2:
        problems.append(f"only {len(classes)} class")
    items = {}
    for s in SPLIT_NAMES:
        if s in split_files:
            items[s] = [(str(f), lab, k, f.relative_to(root).as_posix()) for k, (f, lab) in enumerate(split_files[s])]
    return name, classes, items, problems


def _split(split_files, val_fraction, seed):
    pairs = split_files["train"]
    tr, va = stratified_split([lab for _, lab in pairs], val_fraction, seed)
    out = dict(split_files)
    out["train"] = [pairs[i] for i in tr]
    out["val"] = [pairs[i] for i in va]
    return out
