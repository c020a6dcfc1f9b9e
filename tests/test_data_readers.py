"""Readers: ImageFolder (one tree / split trees), decathlon layout (category-id round trip), bad data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _data_helpers import decathlon, image_folder, write_png
from mdl.core.data import DataError, load_images, make_loader, open_source
from mdl.core.data.splits import stratified_split, stratified_subset

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they are what the issue asks for
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_imagefolder_single_tree_stratified_seeded_split(tmp_path):
    image_folder(tmp_path / "ds", per_class=10)
    dd = open_source(str(tmp_path / "ds"), image_size=16, val_fraction=0.2, seed=3)
    assert dd.classes == ["cat", "dog", "eel"] and dd.num_classes == 3 and dd.category_ids is None
    assert len(dd.splits["train"]) == 24 and len(dd.splits["val"]) == 6 and "test" not in dd.splits
    assert dd.class_counts("val") == [2, 2, 2]
    assert dd.crop == 14 and dd.splits["train"][0][0].shape == (3, 14, 14)
    again = open_source(str(tmp_path / "ds"), image_size=16, val_fraction=0.2, seed=3)
    assert again.file_names == dd.file_names and again.fingerprint == dd.fingerprint
    other = open_source(str(tmp_path / "ds"), image_size=16, val_fraction=0.2, seed=4)
    assert other.file_names["val"] != dd.file_names["val"]
    assert not set(dd.file_names["val"]) & set(dd.file_names["train"])


def test_stratified_split_edge_cases():
    labels = [0] * 7 + [1] * 2 + [2]
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr + va) == list(range(10)) and not set(tr) & set(va)
    got = np.bincount(np.asarray(labels)[va], minlength=3).tolist()
    assert got == [1, 1, 0]  # 7*0.2 -> 1; two images -> one each side; a single image stays in train


def test_imagefolder_split_trees_and_missing_val(tmp_path):
    for s, n in (("train", 6), ("val", 2), ("test", 3)):
        image_folder(tmp_path / "a" / s, per_class=n, seed=hash(s) % 100)
    dd = open_source(str(tmp_path / "a"), image_size=16)
    assert {k: len(v) for k, v in dd.splits.items()} == {"train": 18, "val": 6, "test": 9}
    image_folder(tmp_path / "b" / "train", per_class=5)
    dd = open_source(str(tmp_path / "b"), image_size=16)
    assert len(dd.splits["val"]) == 3 and any("no val/" in p for p in dd.problems)


def test_imagefolder_val_class_outside_train(tmp_path):
    image_folder(tmp_path / "a" / "train", classes=("x", "y"), per_class=3)
    image_folder(tmp_path / "a" / "val", classes=("x", "z"), per_class=2)
    with pytest.raises(DataError, match="z.*not a class of train"):
        open_source(str(tmp_path / "a"), image_size=16)


def test_empty_class_folder_and_missing_root(tmp_path):
    image_folder(tmp_path / "ds", per_class=3)
    (tmp_path / "ds" / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty has no images"):
        open_source(str(tmp_path / "ds"), image_size=16)
    with pytest.raises(DataError, match="not found"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no class folders"):
        open_source(str(tmp_path / "ds" / "empty"))


def test_undecodable_image_fail_and_skip(tmp_path):
    image_folder(tmp_path / "ds", per_class=5)
    bad = tmp_path / "ds" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png") as ei:
        open_source(str(tmp_path / "ds"), image_size=16)
    assert "\n" not in str(ei.value)
    dd = open_source(str(tmp_path / "ds"), image_size=16, on_bad_image="skip")
    assert dd.skipped == 1 and len(dd.splits["train"]) + len(dd.splits["val"]) == 15
    assert any("skipped 1" in p and "broken.png" in p for p in dd.problems)
    assert dd.summary()["skipped"] == 1
    with pytest.raises(DataError, match="on-bad-image"):
        open_source(str(tmp_path / "ds"), on_bad_image="ignore")


def test_grayscale_and_rgba_converted(tmp_path):
    image_folder(tmp_path / "ds", per_class=4)
    rng = np.random.default_rng(1)
    write_png(tmp_path / "ds" / "cat" / "gray.png", rng, mode="L")
    write_png(tmp_path / "ds" / "dog" / "alpha.png", rng, mode="RGBA")
    dd = open_source(str(tmp_path / "ds"), image_size=16)
    assert any("1 grayscale, 1 with an alpha channel, 0 CMYK" in p for p in dd.problems)
    for ds in dd.splits.values():
        assert ds.images.shape[1] == 3 and ds.images.dtype == torch.uint8
    x = load_images([tmp_path / "ds" / "cat" / "gray.png", tmp_path / "ds" / "dog" / "alpha.png"], dd.stats())
    assert x.shape == (2, 3, 14, 14) and x.dtype == torch.float32


def test_decathlon_reader_and_category_id_round_trip(tmp_path):
    truth = decathlon(tmp_path, domain="svhn", prefix=8)
    decathlon(tmp_path, domain="dtd", prefix=4, n_classes=2)
    dd = open_source(str(tmp_path), "svhn", image_size=16)
    assert dd.kind == "decathlon" and dd.classes == ["c0", "c1", "c2"]
    assert dd.category_ids == [80000001, 80000002, 80000003]
    assert dd.flip is False  # svhn: meaning flips
    assert open_source(str(tmp_path), "dtd", image_size=16).flip is True
    for split in ("train", "val", "test"):
        labels = dd.splits[split].labels.tolist()
        written = [{"image_id": i, "category_id": dd.category_ids[lab]} for i, lab in zip(dd.image_ids[split], labels)]
        assert [(r["image_id"], r["category_id"]) for r in written] == truth[split]
    assert dd.size_range == {"min": [24, 18], "max": [24, 18]}
    assert dd.splits["train"].images.shape[-2:] == (16, 21)  # shorter side -> 16, aspect kept


def test_decathlon_stripped_test_unlabelled(tmp_path):
    truth = decathlon(tmp_path, stripped=True)
    dd = open_source(str(tmp_path), image_size=16)  # one domain: no --domain needed
    assert (dd.splits["test"].labels == -1).all() and dd.image_ids["test"] == [i for i, _ in truth["test"]]
    assert dd.summary()["splits"]["test"]["labelled"] == 0
    assert any("stripped" in p for p in dd.problems)


def _rewrite(path, fn):
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(fn(doc)))


@pytest.mark.parametrize("case, match", [
    ("missing_val", "missing annotation file .*svhn_val.json"),
    ("not_json", "svhn_train.json is not valid JSON"),
    ("wrong_shape", "not a COCO-style annotation file"),
    ("bad_label", "label 80000009 of image .* outside the categories"),
    ("bad_entry", "needs 'file_name'"),
    ("unknown_domain", "domain 'gtsrb' not found"),
    ("missing_image", "image file not found: .*00000.png"),
])
def test_decathlon_bad_data(tmp_path, case, match):
    decathlon(tmp_path)
    ann = tmp_path / "annotations"
    domain = "svhn"
    if case == "missing_val":
        (ann / "svhn_val.json").unlink()
    elif case == "not_json":
        (ann / "svhn_train.json").write_text("{oops")
    elif case == "wrong_shape":
        (ann / "svhn_train.json").write_text("[1, 2, 3]")
    elif case == "bad_label":
        _rewrite(ann / "svhn_val.json", lambda d: {**d, "annotations": d["annotations"][:-1]
                                                   + [{**d["annotations"][-1], "category_id": 80000009}]})
    elif case == "bad_entry":
        _rewrite(ann / "svhn_train.json", lambda d: {**d, "images": [{"id": 1}] + d["images"]})
    elif case == "unknown_domain":
        domain = "gtsrb"
    elif case == "missing_image":
        (tmp_path / "data" / "svhn" / "train" / "00000.png").unlink()
    with pytest.raises(DataError, match=match) as ei:
        open_source(str(tmp_path), domain, image_size=16)
    assert "\n" not in str(ei.value)


def test_decathlon_several_domains_need_a_name(tmp_path):
    decathlon(tmp_path, domain="svhn")
    decathlon(tmp_path, domain="dtd", prefix=4)
    with pytest.raises(DataError, match="several domains .*dtd, svhn.*--domain"):
        open_source(str(tmp_path), image_size=16)


def test_flip_policy_and_loaders(tmp_path):
    decathlon(tmp_path / "d", domain="omniglot", prefix=7, sizes=(8, 2, 2))
    image_folder(tmp_path / "f", per_class=8)
    noflip = open_source(str(tmp_path / "d"), image_size=16)
    flip = open_source(str(tmp_path / "f"), image_size=16)
    assert noflip.flip is False and flip.flip is True
    # no-flip domain: training preprocessing == evaluation preprocessing (no flip, no crop jitter)
    torch.manual_seed(0)
    xt, yt = next(iter(make_loader(noflip, "train", 64, train=False)))
    for seed in (1, 2):
        torch.manual_seed(seed)
        ds = noflip.splits["train"].view(train=True)
        xs = torch.stack([x for x, _ in ds.__getitems__(list(range(len(ds))))])
        assert torch.equal(xs, xt)
        assert torch.equal(ds[0][0], xt[0])
    # flip domain: training batches vary with the RNG, evaluation ones don't
    ds = flip.splits["train"].view(train=True)
    torch.manual_seed(1)
    a = torch.stack([x for x, _ in ds.__getitems__(list(range(len(ds))))])
    torch.manual_seed(2)
    b = torch.stack([x for x, _ in ds.__getitems__(list(range(len(ds))))])
    assert not torch.equal(a, b)
    ev = flip.splits["train"].view(train=False)
    assert torch.equal(torch.stack([ev[i][0] for i in range(3)]),
                       torch.stack([x for x, _ in ev.__getitems__([0, 1, 2])]))
    # loaders: shapes, shuffling from the seed, drop_last
    ld = make_loader(flip, "train", 5, train=True, seed=7, drop_last=True)
    batches = list(ld)
    assert all(x.shape == (5, 3, 14, 14) and x.dtype == torch.float32 for x, _ in batches)
    assert len(batches) == len(flip.splits["train"]) // 5
    y1 = torch.cat([y for _, y in make_loader(flip, "train", 5, train=True, seed=7)])
    y2 = torch.cat([y for _, y in make_loader(flip, "train", 5, train=True, seed=7)])
    assert torch.equal(y1, y2)
    with pytest.raises(DataError, match="no 'test' split"):
        make_loader(flip, "test", 4, train=False)


def test_normalisation_uses_train_stats_or_given(tmp_path):
    image_folder(tmp_path / "f", per_class=6)
    dd = open_source(str(tmp_path / "f"), image_size=16, crop=16)
    x = torch.stack([x for x, _ in dd.splits["train"].view(train=False).__getitems__(list(range(len(dd.splits["train"]))))])
    # stats cover the whole resized image, the batch only its centre crop: close, not exact
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    given = open_source(str(tmp_path / "f"), image_size=16, mean_std=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert given.mean == (0.5, 0.5, 0.5) and given.summary()["mean_std_source"] == "given"
    with pytest.raises(DataError, match="mean_std"):
        open_source(str(tmp_path / "f"), image_size=16, mean_std=((0.5,), (0,)))


def test_size_range_names_real_images_not_per_axis_extremes(tmp_path):
    """40x10 and 15x20 images: per-axis extremes would claim 15x10 and 40x20, sizes no image has."""
    rng = np.random.default_rng(0)
    for c, size in (("a", (40, 10)), ("b", (15, 20))):
        for i in range(4):
            write_png(tmp_path / "tree" / c / f"{i}.png", rng, size=size)
    dd = open_source(str(tmp_path / "tree"), image_size=16)
    assert dd.size_range == {"min": [15, 20], "max": [40, 10]}


def test_16_bit_pngs_are_scaled_like_8_bit_ones(tmp_path):
    """A 16-bit PNG holds the same picture as its 8-bit twin; training must not read it as 8-bit garbage."""
    from PIL import Image

    from mdl.core.data.transforms import decode_rgb

    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "a8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "a16.png")  # mode I;16
    a8, _ = decode_rgb(tmp_path / "a8.png")
    a16, _ = decode_rgb(tmp_path / "a16.png")
    assert a16.dtype == torch.uint8 and torch.equal(a8, a16)


def test_cmyk_is_not_alpha_and_decode_errors_are_plain(tmp_path):
    """A CMYK JPEG has 4 channels but no alpha; a decode error names the file, not torchvision's C++ source."""
    from PIL import Image

    from mdl.core.data.transforms import CMYK, decode_rgb

    Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(tmp_path / "c.jpg")
    img, channels = decode_rgb(tmp_path / "c.jpg")
    assert channels == CMYK and img.shape == (3, 8, 8)
    (tmp_path / "bad.png").write_bytes(b"garbage bytes")
    with pytest.raises(DataError) as err:
        decode_rgb(tmp_path / "bad.png")
    msg = str(err.value)
    assert str(tmp_path / "bad.png") in msg and ".cpp" not in msg and "csrc" not in msg
