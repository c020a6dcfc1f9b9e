"""Builtin mini-decathlon: deterministic generation, cache, export to the decathlon layout and back, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mdl.core.data import DataError, list_builtin, open_source
from mdl.core.data.builtin import export_builtin, generate, get_spec, load_builtin

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
SCALE = 0.01  # one or two images per class and split: fast, same code paths
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def small_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MDL_CACHE", str(tmp_path_factory.getbasetemp() / "mdl-cache"))
    monkeypatch.setenv("MDL_BUILTIN_SCALE", str(SCALE))


def test_builtin_names_and_flags():
    names = list_builtin()
    assert names[0] == "source" and len(names) >= 7
    assert {n for n in names if not get_spec(n).flip} == {"digits", "glyphs", "signs", "housenums"}
    prefixes = [get_spec(n).prefix for n in names]
    assert sorted(prefixes) == list(range(101, len(names) + 101))
    from mdl.core.scoring import decathlon_facts  # never a decathlon prefix (1-10): ids cannot pass for official ones
    assert not set(prefixes) & {d["prefix"] for d in decathlon_facts()["domains"].values()}
    with pytest.raises(DataError, match="unknown builtin domain 'nope'"):
        open_source("builtin:nope")


@pytest.mark.parametrize("name", ["source", "digits", "glyphs", "textures", "signs", "housenums", "photos",
                                  "pedestrians"])
def test_generation_is_deterministic(name):
    a = generate(name, seed=5, scale=SCALE)
    b = generate(name, seed=5, scale=SCALE)
    assert a[0].tobytes() == b[0].tobytes() and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[3] == b[3] and a[0].dtype == np.uint8 and a[0].shape[1:] == (40, 40, 3)
    assert set(np.unique(a[2]).tolist()) == {0, 1, 2}
    assert sorted(np.unique(a[1]).tolist()) == list(range(len(a[3])))
    c = generate(name, seed=6, scale=SCALE)
    assert c[0].tobytes() != a[0].tobytes()


def test_cache_same_bytes_and_regenerates_when_tampered():
    first = load_builtin("textures")
    assert first["generated_s"] is not None
    second = load_builtin("textures")
    assert second["generated_s"] is None and second["sha256"] == first["sha256"]
    npy = Path(second["npy"])
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    third = load_builtin("textures")
    assert third["generated_s"] is not None and third["sha256"] == first["sha256"]
    assert not list(npy.parent.glob("*.pkl")) and not list(npy.parent.glob(".*tmp"))


def test_open_builtin_matches_api():
    dd = open_source("builtin:signs", image_size=32)
    assert dd.kind == "builtin" and dd.num_classes == 43 and dd.flip is False and dd.crop == 28
    assert dd.category_ids[0] == get_spec("signs").prefix * 10**7 + 1
    x, y = dd.splits["train"][0]
    assert x.shape == (3, 28, 28) and 0 <= y < 43
    assert len(dd.image_ids["val"]) == len(dd.splits["val"]) and len(dd.fingerprint) == 64
    assert open_source("builtin:signs", image_size=32).fingerprint == dd.fingerprint


@pytest.mark.parametrize("name", ["digits", "photos"])
def test_export_then_decathlon_reader_reads_it_back_identically(tmp_path, name):
    written = export_builtin(name, tmp_path)
    assert set(written) == {"train", "val", "test"}
    for s in written:
        assert (tmp_path / "annotations" / f"{name}_{s}.json").is_file()
    a = open_source(f"builtin:{name}", image_size=32)
    b = open_source(str(tmp_path), name, image_size=32)
    assert b.kind == "decathlon" and a.classes == b.classes and a.category_ids == b.category_ids
    assert a.flip == b.flip and a.mean == b.mean and a.std == b.std
    for s in ("train", "val", "test"):
        assert a.image_ids[s] == b.image_ids[s]
        assert torch.equal(a.splits[s].labels, b.splits[s].labels)
        assert torch.equal(a.splits[s].images, b.splits[s].images)
    doc = json.loads((tmp_path / "annotations" / f"{name}_val.json").read_text())
    assert {c["id"] for c in doc["categories"]} == set(a.category_ids)


def _cli(*args, env_extra=None):
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mdl", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_inspect_every_builtin_json():
    from typer.testing import CliRunner

    from mdl.cli.data_cmd import app

    runner = CliRunner()
    for name in list_builtin():
        r = runner.invoke(app, ["inspect", f"builtin:{name}", "--image-size", "32", "--json"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)
        assert s["name"] == name and s["num_classes"] >= 2 and len(s["mean"]) == 3
        assert set(s["splits"]) == {"train", "val", "test"}


def test_cli_errors_are_one_line_and_help_stays_light(tmp_path):
    r = _cli("data", "inspect", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys, mdl.cli.app, mdl.cli.data_cmd, mdl.core.data; "
                        "sys.exit('torch' in sys.modules)"], env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert r.returncode == 0, "importing the CLI must not import torch"


def test_cli_export_then_inspect(tmp_path):
    from typer.testing import CliRunner

    from mdl.cli.data_cmd import app

    runner = CliRunner()
    r = runner.invoke(app, ["export-builtin", "digits", "--out", str(tmp_path / "x"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"]["train"] > 0
    r = runner.invoke(app, ["inspect", str(tmp_path / "x"), "--image-size", "32"])
    assert r.exit_code == 0 and "digits" in r.stdout and "category ids" in r.stdout
    r = runner.invoke(app, ["inspect", str(tmp_path / "x"), "--domain", "nope"])
    assert r.exit_code != 0 and isinstance(r.exception, DataError)
