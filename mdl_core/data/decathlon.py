"""The Visual Decathlon layout: `annotations/<domain>_{train,val,test}.json` (COCO style; the test split
may be `<domain>_test_stripped.json` without labels), images at `file_name` relative to the root.

Category ids follow the official `prefix * 10^7 + class` scheme (classes 1-based). Label indices are the
categories sorted by id, and `DomainData.category_ids[label]` gives the official id back, so a results
file (`[{image_id, category_id}]`) can be written from predictions exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

from mdl.core.data.errors import DataError
from mdl.core.data.transforms import NO_FLIP_DOMAINS
from mdl.files import atomic_write

PREFIX_SCALE = 10**7


def is_decathlon(root: Path) -> bool:
    return (root / "annotations").is_dir()


def category_id(prefix: int, label: int) -> int:
    """Official category id of 0-based label `label` in a domain with the given prefix."""
    return prefix * PREFIX_SCALE + label + 1


def available_domains(root: Path) -> list[str]:
    ann = root / "annotations"
    return sorted({p.name[: -len("_train.json")] for p in ann.glob("*_train.json")})


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("categories", []), list
    ) or not isinstance(data.get("annotations", []), list):
        raise DataError(f"{path} is not a COCO-style annotation file (need an object with "
                        "'images', 'annotations', 'categories' lists)")
    return data


def _field(rec, key, typ, path: Path, what: str):
    if not isinstance(rec, dict) or key not in rec or not isinstance(rec[key], typ) or isinstance(rec[key], bool):
        raise DataError(f"{path}: every entry of '{what}' needs {key!r} ({typ.__name__}), got {str(rec)[:80]}")
    return rec[key]


def _categories(data: dict, path: Path) -> list[tuple[int, str]]:
    cats = data.get("categories") or []
    if not cats:
        raise DataError(f"{path}: no categories")
    out = [(_field(c, "id", int, path, "categories"), str(c.get("name", c["id"]))) for c in cats]
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate category ids")
    return sorted(out)


def annotation_files(root: Path, domain: str) -> dict[str, Path]:
    ann = root / "annotations"
    files = {"train": ann / f"{domain}_train.json", "val": ann / f"{domain}_val.json"}
    for split in ("train", "val"):
        if not files[split].is_file():
            raise DataError(f"missing annotation file {files[split]}")
    for cand in (ann / f"{domain}_test.json", ann / f"{domain}_test_stripped.json"):
        if cand.is_file():
            files["test"] = cand
            break
    return files


def read_decathlon(root: Path, domain: str | None, source: str):
    """Parse the annotation files of one domain. Returns
    (name, classes, category_ids, items, flip_or_None, problems) for `build_domain`."""
    domains = available_domains(root)
    if not domains:
        raise DataError(f"{root / 'annotations'} holds no <domain>_train.json file")
    if domain is None:
        if len(domains) > 1:
            raise DataError(f"{source} holds several domains ({', '.join(domains)}): pick one with --domain")
        domain = domains[0]
    elif domain not in domains:
        raise DataError(f"domain {domain!r} not found in {root / 'annotations'} (found: {', '.join(domains)})")
    files = annotation_files(root, domain)
    parsed = {split: _load_json(path) for split, path in files.items()}
    cats = _categories(parsed["train"], files["train"])
    for split in ("val", "test"):
        if split in parsed and parsed[split].get("categories"):
            other = _categories(parsed[split], files[split])
            if [i for i, _ in other] != [i for i, _ in cats]:
                raise DataError(f"{files[split]}: categories differ from those of {files['train'].name}")
    cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
    classes = [n for _, n in cats]
    category_ids = [cid for cid, _ in cats]
    problems: list[str] = []
    items: dict[str, list[tuple[str, int, int, str]]] = {}
    seen_ids: set[int] = set()
    for split, data in parsed.items():
        path = files[split]
        labels: dict[int, int] = {}
        conflicts: list[int] = []
        for a in data.get("annotations") or []:
            iid = _field(a, "image_id", int, path, "annotations")
            cid = _field(a, "category_id", int, path, "annotations")
            if cid not in cat_index:
                raise DataError(f"{path}: label {cid} of image {iid} is outside the categories "
                                f"({category_ids[0]}..{category_ids[-1]})")
            if labels.get(iid, cat_index[cid]) != cat_index[cid]:
                conflicts.append(iid)
            labels[iid] = cat_index[cid]
        if conflicts:
            problems.append(f"{path.name}: {len(set(conflicts))} image(s) have several different labels; the last "
                            f"one is used (e.g. image {conflicts[0]})")
        labelled = bool(labels)
        if split != "test" and not labelled:
            raise DataError(f"{path}: no annotations (labels) for the {split} split")
        lst = []
        ids_here: set[int] = set()
        for im in data["images"]:
            iid = _field(im, "id", int, path, "images")
            fname = _field(im, "file_name", str, path, "images")
            if iid in ids_here:
                raise DataError(f"{path}: duplicate image id {iid}")
            ids_here.add(iid)
            if labelled and iid not in labels:
                raise DataError(f"{path}: image {iid} ({fname}) has no annotation")
            lst.append((str(root / fname), labels.get(iid, -1), iid, fname))
        unknown = set(labels) - ids_here
        if unknown:
            raise DataError(f"{path}: annotation for image id {min(unknown)} that is not in 'images'")
        if seen_ids & ids_here:
            problems.append(f"image ids shared between splits (e.g. {min(seen_ids & ids_here)})")
        seen_ids |= ids_here
        if not lst:
            raise DataError(f"{path}: no images")
        items[split] = lst
    if "test" in files and files["test"].name.endswith("_stripped.json"):
        problems.append("test split has no labels (stripped): predictions only, no accuracy")
    info = parsed["train"].get("info")
    flip = None
    if isinstance(info, dict) and isinstance(info.get("mdl"), dict) and isinstance(info["mdl"].get("flip"), bool):
        flip = info["mdl"]["flip"]
    if flip is None:
        flip = domain not in NO_FLIP_DOMAINS
    return domain, classes, category_ids, items, flip, problems


def write_decathlon(out: Path, name: str, prefix: int, classes: list[str], flip: bool,
                    splits: dict[str, tuple], *, native: bool = True) -> dict[str, int]:
    """Write a domain in the decathlon layout. `splits[split] = (uint8 images [N,H,W,3] numpy, labels,
    image ids)`. Images go to data/<name>/<split>/<id>.png; annotations/<name>_<split>.json."""
    import numpy as np
    import torch
    from torchvision.io import encode_png

    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    cats = [{"id": category_id(prefix, i), "name": c} for i, c in enumerate(classes)]
    written = {}
    for split, (images, labels, ids) in splits.items():
        d = out / "data" / name / split
        d.mkdir(parents=True, exist_ok=True)
        imgs, anns = [], []
        for k, (img, label, iid) in enumerate(zip(images, labels, ids)):
            fname = f"data/{name}/{split}/{int(iid)}.png"
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
            (out / fname).write_bytes(encode_png(t, compression_level=6).numpy().tobytes())
            imgs.append({"id": int(iid), "width": int(img.shape[1]), "height": int(img.shape[0]), "file_name": fname})
            anns.append({"id": int(iid), "image_id": int(iid), "category_id": category_id(prefix, int(label))})
        doc = {"info": {"description": f"mdl builtin domain {name}", "mdl": {"flip": bool(flip)}},
               "images": imgs, "annotations": anns, "categories": cats}
        path = out / "annotations" / f"{name}_{split}.json"
        atomic_write(path, json.dumps(doc))
        written[split] = len(imgs)
    return written
