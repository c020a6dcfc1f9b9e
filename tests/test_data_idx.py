"""MNIST-format (IDX) folders: what is read (train, a stratified val share, t10k test), seeded subsets of
any source, and every kind of bad IDX input as a one-line error naming the file, registry untouched."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from _data_helpers import idx_bytes, idx_folder, image_folder
from conftest import tree_digest

from mdl.core.data import DataError, open_source
from mdl.core.data.idx import read_idx_file
from mdl.core.data.splits import stratified_subset


def test_idx_folder_splits_classes_and_rgb(tmp_path):
    root = idx_folder(tmp_path / "fm", n_train=60, n_test=21, classes=3)
    dd = open_source(str(root), image_size=16, val_fraction=0.2, seed=0)
    assert dd.kind == "idx" and dd.classes == ["0", "1", "2"] and dd.name == "fm"
    assert {s: len(d) for s, d in dd.splits.items()} == {"train": 48, "val": 12, "test": 21}
    assert dd.class_counts("val") == [4, 4, 4]
    x, _ = dd.splits["train"][0]
    assert x.shape == (3, 14, 14)  # grey replicated to RGB, resized to 16, cropped 14
    assert not set(dd.image_ids["train"]) & set(dd.image_ids["val"])  # ids index the train file: disjoint
    assert dd.splits["test"].labels.tolist() == [i % 3 for i in range(21)]
    raw = idx_folder(tmp_path / "raw", n_test=21, gz=False)  # uncompressed files read the same
    assert open_source(str(raw), image_size=16).fingerprint == open_source(str(root.parent / "fm"), image_size=16).fingerprint
    (root / "classes.txt").write_text("shirt\nshoe\nbag\n")
    assert open_source(str(root), image_size=16).classes == ["shirt", "shoe", "bag"]


def test_subsets_are_stratified_seeded_and_exact(tmp_path):
    labels = [0] * 50 + [1] * 30 + [2] * 20
    a = stratified_subset(labels, 10, seed=0)
    assert len(a) == 10 and np.bincount(np.asarray(labels)[a]).tolist() == [5, 3, 2]
    assert a == stratified_subset(labels, 10, seed=0) and a != stratified_subset(labels, 10, seed=1)
    assert len(stratified_subset(labels, 7, seed=0)) == 7  # remainders fill the last places
    assert stratified_subset(labels, 500, seed=0) == list(range(100))
    root = idx_folder(tmp_path / "fm", n_train=90, classes=3)
    dd = open_source(str(root), image_size=16, train_images=30, val_images=9, seed=2)
    assert len(dd.splits["train"]) == 30 and dd.class_counts("train") == [10, 10, 10]
    assert len(dd.splits["val"]) == 9 and len(dd.splits["test"]) == 20  # test is never subset
    whole = open_source(str(root), image_size=16, seed=2)
    assert set(dd.image_ids["train"]) <= set(whole.image_ids["train"]) and dd.fingerprint != whole.fingerprint
    tree = image_folder(tmp_path / "tree", per_class=10)  # every source takes the same options
    assert len(open_source(str(tree), image_size=16, train_images=6).splits["train"]) == 6
    with pytest.raises(DataError, match="--train-images must be a positive integer"):
        open_source(str(root), image_size=16, train_images=0)


def _corrupt_gzip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\xff" * 16
    p.write_bytes(bytes(data))


def _rewrite(p, fn):
    arr = read_idx_file(p, (1, 3))
    p.write_bytes(gzip.compress(fn(arr)))


BAD = {
    "truncated gzip": ("train-images-idx3-ubyte.gz", lambda p: p.write_bytes(p.read_bytes()[:-40]), "truncated or corrupt"),
    "corrupt gzip": ("train-images-idx3-ubyte.gz", _corrupt_gzip, "truncated or corrupt"),
    "wrong magic": ("train-labels-idx1-ubyte.gz", lambda p: p.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + b"\0" * 64)),
                    "wrong magic number"),
    "short data": ("t10k-images-idx3-ubyte.gz", lambda p: _rewrite(p, lambda a: idx_bytes(a)[:-5]), "truncated or corrupt"),
    "counts differ": ("train-labels-idx1-ubyte.gz", lambda p: _rewrite(p, lambda a: idx_bytes(a[:-1])), "59 labels for 60 images"),
    "label outside": ("t10k-labels-idx1-ubyte.gz", lambda p: _rewrite(p, lambda a: idx_bytes(np.where(np.arange(len(a)) == 4, 7, a))),
                      "label 7 .sample 4. is outside the 3 classes"),
    "missing labels": ("train-labels-idx1-ubyte.gz", lambda p: p.unlink(), "labels file .* is missing"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_idx_is_one_line_naming_the_file(tmp_path, case):
    fname, damage, message = BAD[case]
    root = idx_folder(tmp_path / "fm")
    damage(root / fname)
    with pytest.raises(DataError, match=message) as exc:
        open_source(str(root), image_size=16)
    text = str(exc.value)
    assert "\n" not in text
    named = fname if case != "missing labels" else "train-images-idx3-ubyte.gz"
    assert named in text


def test_bad_idx_through_the_cli_leaves_the_registry_as_it_was(tmp_path, mdl, home):
    root = idx_folder(tmp_path / "fm")
    (root / "classes.txt").write_text("a\nb\nc\n")  # with names, a training label past them is outside the classes
    _rewrite(root / "train-labels-idx1-ubyte.gz", lambda a: idx_bytes(np.where(np.arange(len(a)) == 0, 9, a)))
    assert mdl("init", home=home).code == 0 and mdl("trunk", "import", home=home).code == 0
    before = tree_digest(home)
    for args in (["data", "inspect", str(root)], ["add-domain", "fm", "--data", str(root), "--epochs", "1", "--device", "cpu"]):
        res = mdl(*args, home=home if args[0] != "data" else None)
        assert res.code == 1, res.stderr
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "train-labels-idx1-ubyte.gz" in lines[0] and "outside the" in lines[0], res.stderr
    assert tree_digest(home) == before


def test_labels_without_names_define_the_classes_and_gaps_are_reported(tmp_path):
    root = idx_folder(tmp_path / "fm", classes=3)
    _rewrite(root / "train-labels-idx1-ubyte.gz", lambda a: idx_bytes(np.where(a == 2, 4, a)))
    _rewrite(root / "t10k-labels-idx1-ubyte.gz", lambda a: idx_bytes(np.where(a == 2, 4, a)))
    dd = open_source(str(root), image_size=16)
    assert dd.classes == ["0", "1", "2", "3", "4"]
    assert any("2 class(es) have no training images: 2, 3" in p for p in dd.problems)


def test_data_inspect_reads_idx_with_subsets(tmp_path, mdl):
    root = idx_folder(tmp_path / "fm", n_train=90)
    res = mdl("data", "inspect", str(root), "--image-size", "16", "--train-images", "30", "--json")
    assert res.code == 0, res.stderr
    s = res.json()
    assert s["kind"] == "idx" and s["splits"]["train"]["images"] == 30 and s["splits"]["test"]["images"] == 20
