"""The Python API (mdl.Client): the same workflows as the CLI, from a script or notebook. Its answers
equal the CLI's `--json` ones; every kind of image gives the same prediction; bad input raises without
touching the registry."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from _data_helpers import image_folder
from _serve_helpers import make_registry, png_bytes
from conftest import invoke, tree_digest
from PIL import Image

import mdl
from mdl.workflows import events


@pytest.fixture
def served(tmp_path):
    """A registry with a tiny trunk and two dw domains (made without training)."""
    home = tmp_path / "reg"
    make_registry(home, {"alpha": 3, "beta": 5}).close()
    return home


def test_import_mdl_stays_light_and_exposes_the_client():
    import subprocess
    import sys

    code = "import sys, mdl; mdl.Client; print(sorted(m for m in ('torch', 'sqlalchemy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert "Client" in mdl.__all__ and mdl.Client.__module__ == "mdl.api"


def test_list_show_and_promote_match_the_cli(served):
    with mdl.Client(served, progress=False) as client:
        assert client.list() == invoke("list", "--json", home=served).json()
        assert client.show("alpha") == json.loads(json.dumps(invoke("show", "alpha", "--json", home=served).json()))
        assert [r["name"] for r in client.list()] == ["alpha", "beta"]


def test_predict_takes_paths_pil_images_bytes_and_tensors_alike(served, tmp_path):
    raw = png_bytes(3)
    path = tmp_path / "x.png"
    path.write_bytes(raw)
    pil = Image.open(io.BytesIO(raw))
    pixels = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).contiguous()
    with mdl.Client(served, progress=False) as client:
        rows = client.predict([path, str(path), pil, raw, pixels, pixels.float() / 255], domain="alpha", top_k=2)
    cli = invoke("predict", "alpha", str(path), "--top-k", "2", "--json", home=served).json()[0]
    assert len(rows) == 6 and rows[0] == cli | {"image": str(path)}
    for r in rows[1:]:
        assert r["top"] == cli["top"], r["image"]
    assert [r["image"] for r in rows[2:]] == ["image 2", "image 3", "image 4", "image 5"]


def test_predict_one_image_and_mixed_domains(served):
    imgs = [Image.open(io.BytesIO(png_bytes(s))) for s in range(4)]
    with mdl.Client(served, progress=False) as client:
        alone = {d: client.predict(imgs, domain=d) for d in ("alpha", "beta")}
        mixed = client.predict(imgs, domain=["alpha", "beta", "beta", "alpha"])
        single = client.predict(imgs[1], domain="beta")
    expected = [alone["alpha"][0], alone["beta"][1], alone["beta"][2], alone["alpha"][3]]
    for m, e in zip(mixed, expected):
        assert m["domain"] == e["domain"] and [t["index"] for t in m["top"]] == [t["index"] for t in e["top"]]
        assert [t["probability"] for t in m["top"]] == pytest.approx([t["probability"] for t in e["top"]], abs=1e-3)
    assert len(single) == 1 and single[0]["top"] == alone["beta"][1]["top"]
    assert all(len(r["top"]) == 3 for r in alone["alpha"])  # top_k capped at the domain's classes


def test_network_is_the_registered_multi_domain_module(served):
    with mdl.Client(served, progress=False) as client:
        net = client.network(["alpha", "beta"])
        both = client.network()
    assert isinstance(net, torch.nn.Module) and not net.training
    assert set(net.domains) == {"alpha", "beta"} and set(both.domains) == {"alpha", "beta"}
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        mixed = net(x, domain=["alpha", "beta", "alpha", "beta"])
        alpha = net(x, domain="alpha")
    assert torch.allclose(mixed[0, :3], alpha[0, :3], atol=1e-5)


def test_bad_input_raises_and_leaves_the_registry_alone(served, tmp_path):
    before = tree_digest(served)
    with mdl.Client(served, progress=False) as client:
        with pytest.raises(ValueError, match="2 image.* but 1 domain"):
            client.predict([png_bytes(0), png_bytes(1)], domain=["alpha"])
        with pytest.raises(KeyError, match="nope"):
            client.predict(png_bytes(0), domain="nope")
        with pytest.raises(ValueError, match="float pixels"):
            client.predict(torch.full((3, 8, 8), 2.0), domain="alpha")
        with pytest.raises(ValueError, match="not int"):
            client.predict(42, domain="alpha")
        with pytest.raises(TypeError, match="unknown training option.*learning_rate"):
            client.add_domain("gamma", image_folder(tmp_path / "data"), epochs=1, learning_rate=0.1)
        with pytest.raises(ValueError, match="image file not found"):
            client.predict(tmp_path / "missing.png", domain="alpha")
    assert tree_digest(served) == before
    with pytest.raises(Exception, match="no mdl registry"):
        mdl.Client(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_add_domain_then_score_reports_through_the_reporter(tmp_path):
    home = tmp_path / "fresh"
    make_registry(home, {}).close()  # the tiny trunk alone
    data = image_folder(tmp_path / "data", classes=("cat", "dog", "eel"), per_class=12, seed=4)
    recorder = events.Recorder()
    with mdl.Client(home, progress=recorder) as client:
        row = client.add_domain("gamma", data, epochs=2, batch_size=8, device="cpu", seed=0)
        report = client.score()
        names = [r["name"] for r in client.list()]
    assert row["name"] == "gamma" and row["version"] == 1 and row["method"] == "dw" and row["num_classes"] == 3
    assert names == ["gamma"]
    gamma = next(d for d in report["domains"] if d["name"] == "gamma")
    assert gamma["accuracy"] == pytest.approx(row["accuracy"])  # the same val split, the same network
    kinds = [e[0] for e in recorder.events]
    assert any(m.startswith("Adding gamma (dw)") for m in recorder.notes())
    started = next(e for e in recorder.events if e[0] == "started")
    steps = sum(e[2] for e in recorder.events if e[0] == "advanced" and e[1] == started[1])
    assert started[2] == steps > 0 and kinds.count("finished") == kinds.count("started")  # every bar closed


def test_progress_false_is_silent(served, capsys):
    with mdl.Client(served, progress=False) as client:
        client.predict(png_bytes(0), domain="alpha")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
