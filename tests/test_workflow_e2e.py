"""The user's chain through the real `mdl` process at toy size: pretrain, add domains, re-add (v2),
gates, score, predict; a killed add-domain registers nothing and --resume finishes it; bad input
exits 1 with one line and leaves the registry byte-identical."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, tree_digest
from PIL import Image

TOY = ["--width", "0.25", "--image-size", "16", "--batch-size", "32", "--device", "cpu"]
TRAIN = ["--batch-size", "32", "--device", "cpu"]


def make_tree(root: Path, classes: int, per_class: int, seed: int, size: int = 20) -> Path:
    """An ImageFolder tree whose classes differ in colour and stripe frequency, plus noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        colour = rng.integers(40, 215, size=3)
        for i in range(per_class):
            x = np.arange(size)
            stripes = (np.sin(x * (c + 1) * 0.6 + rng.uniform(0, 6))[None, :, None] * 40)
            img = colour[None, None, :] + stripes + rng.normal(0, 25, size=(size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("data")
    return {"src": make_tree(base / "src", 6, 40, seed=1), "alpha": make_tree(base / "alpha", 3, 40, seed=2),
            "beta": make_tree(base / "beta", 4, 30, seed=3)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, trees) -> Path:
    """A registry with a pretrained trunk, alpha (v1, v2), beta, gates."""
    home = tmp_path_factory.mktemp("chain") / "home"
    env = {"MDL_CACHE": str(home.parent / "cache")}
    assert invoke("init", home=home, env=env).code == 0
    steps = [
        ["pretrain", "--data", str(trees["src"]), "--name", "src", "--epochs", "1", *TOY],
        ["add-domain", "alpha", "--data", str(trees["alpha"]), "--epochs", "1", *TRAIN],
        ["add-domain", "beta", "--data", str(trees["beta"]), "--epochs", "1", *TRAIN],
        ["add-domain", "alpha", "--data", str(trees["alpha"]), "--epochs", "2", *TRAIN],
        ["gate-train", "--domain", "alpha", "--placement", "late", "--epochs", "1", *TRAIN],
    ]
    for step in steps:
        res = invoke(*step, home=home, env=env)
        assert res.code == 0, (step, res.stderr)
    return home


@pytest.fixture
def own_chain(tmp_path, chain) -> Path:
    """This test's own copy of the chain: what a test writes (a version, a recorded evaluation, a failed
    run's leftovers) never reaches another test, whatever order they run in. The chain is built once."""
    return Path(shutil.copytree(chain, tmp_path / "home"))


def test_list_shows_versions_and_params(own_chain):
    rows = {r["name"]: r for r in invoke("list", "--json", home=own_chain).json()}
    assert set(rows) == {"src", "alpha", "beta"}
    assert rows["alpha"]["version"] == 2 and rows["beta"]["version"] == 1
    assert rows["alpha"]["method"] == "dw" and rows["alpha"]["num_classes"] == 3
    assert 0 < rows["alpha"]["domain_params"] and 0 <= rows["alpha"]["accuracy"] <= 100
    shown = invoke("show", "alpha", "--json", home=own_chain).json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][1]["gate"]["placement"] == "late"
    assert len(shown["versions"][1]["config"]["history"]) == 2


def test_score_json(own_chain):
    res = invoke("score", "--json", "--device", "cpu", home=own_chain)
    assert res.code == 0, res.stderr
    report = res.json()
    assert {d["name"] for d in report["domains"]} == {"src", "alpha", "beta"}
    for d in report["domains"]:
        assert 0 <= d["accuracy"] <= 100
        assert d["score"] is None and "no reference" in d["score_basis"]  # custom domains, no finetune run yet
    assert report["total"] == 0


def test_predict_single_and_mixed(own_chain, trees):
    img_a = str(next((trees["alpha"] / "class_01").glob("*.png")))
    img_b = str(next((trees["beta"] / "class_02").glob("*.png")))
    res = invoke("predict", "alpha", img_a, f"beta@{img_b}", "--top-k", "2", "--json", "--device", "cpu",
                 home=own_chain)
    assert res.code == 0, res.stderr
    rows = res.json()
    assert [r["domain"] for r in rows] == ["alpha", "beta"]
    assert all(len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"] for r in rows)
    assert rows[0]["top"][0]["class"].startswith("class_")


def test_finetune_run_becomes_reference_for_score(own_chain, trees):
    res = invoke("add-domain", "beta", "--data", str(trees["beta"]), "--method", "finetune", "--epochs", "1",
                  *TRAIN, home=own_chain)
    assert res.code == 0, res.stderr
    report = invoke("score", "--json", "--device", "cpu", home=own_chain).json()
    beta = next(d for d in report["domains"] if d["name"] == "beta")
    assert beta["method"] == "finetune" and beta["score_basis"] == "recorded reference"
    assert beta["score"] is not None and report["total"] == pytest.approx(beta["score"])


def test_killed_add_domain_registers_nothing_and_resume_finishes(tmp_path, trees, own_chain):
    home = own_chain
    before = invoke("list", "--json", home=home).json()
    args = [sys.executable, "-m", "mdl", "add-domain", "gamma", "--data", str(trees["src"]), "--epochs", "4",
            "--batch-size", "16", "--device", "cpu", "--home", str(home)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    state = None
    while time.time() < deadline and proc.poll() is None:
        states = list((home / "runs").glob("add-domain-gamma-*/state.json"))
        if states and json.loads(states[0].read_text())["epoch"] >= 1:
            state = states[0]
            break
        time.sleep(0.05)
    assert state is not None, "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert invoke("list", "--json", home=home).json() == before  # nothing registered
    res = invoke("add-domain", "gamma", "--data", str(trees["src"]), "--epochs", "4", "--batch-size", "16",
                  "--device", "cpu", "--resume", "--json", home=home)
    assert res.code == 0, res.stderr
    shown = invoke("show", "gamma", "--json", home=home).json()["versions"]
    assert len(shown) == 1 and shown[0]["config"]["resumed_from_epoch"] >= 1
    assert len(shown[0]["config"]["history"]) == 4
    assert not any((home / "runs").glob("add-domain-gamma-*/state.json"))  # run folder cleaned up


@pytest.mark.parametrize("args, message", [
    (["add-domain", "x", "--data", "/no/such/folder", "--epochs", "1"], "/no/such/folder"),
    (["add-domain", "x", "--data", "{alpha}", "--method", "nope", "--epochs", "1"], "unknown method"),
    (["add-domain", "Bad Name", "--data", "{alpha}", "--epochs", "1"], "invalid domain name"),
    (["add-domain", "x", "--data", "{alpha}", "--trunk", "resnet26", "--epochs", "1"], "no trunk resnet26"),
    (["add-domain", "x", "--data", "{alpha}", "--epochs", "1", "--resume", "--device", "cpu"], "nothing to resume"),
    (["pretrain", "--data", "{alpha}", "--arch", "vgg", "--epochs", "1"], "vgg"),
    (["predict", "nope", "{image}"], "unknown domain 'nope'"),
    (["predict", "alpha", "/no/such.png"], "not found"),
    (["predict", "alpha", "zz@/no/such.png"], "image not found: zz@/no/such.png"),
    (["gate-train", "--domain", "nope"], "unknown domain 'nope'"),
    (["show", "nope"], "unknown domain"),
    (["add-domain", "x", "--data", "{alpha}", "--lr", "nan", "--epochs", "1", "--device", "cpu"], "must be finite"),
    (["add-domain", "x", "--data", "{alpha}", "--trunk", "resnet26_dw:vX", "--epochs", "1"], "expected ARCH or ARCH:vN"),
])
def test_bad_input_one_line_exit_1_registry_unchanged(own_chain, trees, args, message):
    image = str(next((trees["alpha"] / "class_00").glob("*.png")))
    args = [a.format(alpha=trees["alpha"], image=image) for a in args]
    before = tree_digest(own_chain)
    res = invoke(*args, home=own_chain)
    lines = res.stderr.strip().splitlines()
    assert res.code == 1 and len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert tree_digest(own_chain) == before


def test_diverged_training_stops_and_registers_nothing(own_chain, trees):
    """A loss that becomes NaN/inf stops the run with one error line (after its progress lines) and
    registers nothing, instead of a NaN adapter as the current version."""
    before = tree_digest(own_chain)
    res = invoke("add-domain", "x", "--data", str(trees["alpha"]), "--lr", "1e30", "--epochs", "2",
                 "--batch-size", "16", "--device", "cpu", home=own_chain)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.code == 1 and len(errors) == 1 and "training diverged" in errors[0] and "Traceback" not in res.stderr
    assert tree_digest(own_chain) == before


def test_usage_errors_exit_2(own_chain):
    before = tree_digest(own_chain)
    seed = invoke("add-domain", "x", "--data", "y", "--seed", "-1", home=own_chain)
    assert seed.code == 2 and "--seed" in seed.stderr
    assert invoke("add-domain", "x", "--data", "y", "--epochs", "0", home=own_chain).code == 2
    assert invoke("gate-train", "--placement", "sideways", home=own_chain).code == 2
    assert tree_digest(own_chain) == before


def test_decathlon_domain_scored_officially_and_results_file(tmp_path, own_chain):
    from _data_helpers import decathlon

    home = own_chain
    root = tmp_path / "decathlon"
    truth = decathlon(root, "svhn", prefix=8, n_classes=3, sizes=(20, 6, 5), stripped=True)
    res = invoke("add-domain", "svhn", "--data", str(root), "--epochs", "1", *TRAIN, home=home)
    assert res.code == 0, res.stderr
    val = invoke("score", "--json", "--device", "cpu", home=home).json()
    svhn = next(d for d in val["domains"] if d["name"] == "svhn")
    assert svhn["baseline"] == 96.55 and svhn["score_basis"] == "official baseline"
    results = tmp_path / "results.json"
    test = invoke("score", "--split", "test", "--results", str(results), "--json", "--device", "cpu", home=home)
    assert test.code == 0, test.stderr
    svhn_test = next(d for d in test.json()["domains"] if d["name"] == "svhn")
    assert svhn_test["accuracy"] is None  # stripped test annotations: predictions only
    rows = json.loads(results.read_text())  # only the decathlon domain's test images, every one of them
    assert sorted(r["image_id"] for r in rows) == sorted(i for i, _ in truth["test"])
    assert {r["category_id"] for r in rows} <= {80000001, 80000002, 80000003}
    info = test.json()["results"]
    assert info["domains"] == ["svhn"] and len(info["missing_challenge_domains"]) == 9
    assert "svhn" not in info["missing_challenge_domains"]

    # a results folder that does not exist fails before any evaluation; nothing is recorded
    before = tree_digest(home)
    bad = invoke("score", "--split", "test", "--results", str(tmp_path / "nope" / "r.json"), "--device", "cpu",
                 home=home)
    assert bad.code == 1 and "does not exist" in bad.stderr and tree_digest(home) == before
    # an unreadable test image: the submission would miss it, so score fails naming its id; nothing recorded
    first_test = truth["test"][0][0]
    (root / "data" / "svhn" / "test" / "00000.png").write_bytes(b"not a png")
    bad = invoke("score", "--split", "test", "--results", str(results), "--device", "cpu", home=home)
    assert bad.code == 1 and f"ids {first_test}" in bad.stderr and tree_digest(home) == before


def test_decathlon_domain_under_another_name(tmp_path, own_chain):
    """`add-domain NAME --domain D` reads domain D of a decathlon folder; it is still scored officially."""
    from _data_helpers import decathlon

    home = own_chain
    root = tmp_path / "decathlon"
    decathlon(root, "gtsrb", prefix=5, n_classes=3, sizes=(20, 6, 5))
    res = invoke("add-domain", "signs-de", "--data", str(root), "--domain", "gtsrb", "--epochs", "1", *TRAIN,
                 "--json", home=home)
    assert res.code == 0, res.stderr
    val = invoke("score", "--json", "--device", "cpu", home=home).json()
    row = next(d for d in val["domains"] if d["name"] == "signs-de")
    assert row["baseline"] == 97.53 and row["score_basis"] == "official baseline"
    bad = invoke("add-domain", "signs-de", "--data", str(root), "--domain", "nope", "--epochs", "1", *TRAIN, home=home)
    assert bad.code == 1 and "nope" in bad.stderr


def test_add_domain_shows_what_data_inspect_finds(tmp_path, own_chain):
    """An image annotated with two different labels (the last wins) is said, not silently trained on."""
    from _data_helpers import decathlon

    home = own_chain
    root = tmp_path / "decathlon"
    decathlon(root, "dtd", prefix=4, n_classes=3, sizes=(10, 4, 4))
    train = root / "annotations" / "dtd_train.json"
    doc = json.loads(train.read_text())
    first = doc["annotations"][0]
    other = next(c["id"] for c in doc["categories"] if c["id"] != first["category_id"])
    doc["annotations"].append({"id": 999, "image_id": first["image_id"], "category_id": other})
    train.write_text(json.dumps(doc))
    res = invoke("add-domain", "dtd", "--data", str(root), "--epochs", "1", *TRAIN, home=home)
    assert res.code == 0, res.stderr
    assert f"several different labels; the last one is used (e.g. image {first['image_id']})" in res.stderr
