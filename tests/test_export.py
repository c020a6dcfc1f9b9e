"""`mdl export`'s graph: the indexed forward (a domain index tensor instead of names) equals per-domain
forwards, and the ONNX / torch.export / TorchScript files agree with PyTorch (for batches where a
domain has 0, 1 or many samples); a 3-domain Lite0 at 1e-4."""
from __future__ import annotations

import json
import os

import pytest
import torch
from test_nets_mixed import NAMES, check_against_single, make

from mdl.core import create_network
from mdl.core.export import compare, export_network, load_pt2, read_meta


def indexed(net, names=NAMES):
    order = list(net.domains)
    return torch.tensor([order.index(n) for n in names])


@pytest.mark.parametrize("method", ["dw", "bn", "parallel-adapter", "series-adapter", "finetune"])
def test_indexed_forward_equals_per_domain(method):
    net = make("resnet26" if "adapter" in method else "resnet26_dw", method)
    if "adapter" in method:  # adapters start at zero: make them matter
        with torch.no_grad():
            for d in net.domains:
                for k, t in net.domain_tensors(d).items():
                    if "adapter" in k and k.endswith("weight"):
                        t.normal_(0, 0.1)
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        out = net(x, domain=indexed(net))
        check_against_single(net, x, out)
        torch.testing.assert_close(out, net(x, domain=NAMES), rtol=1e-5, atol=1e-5)


def test_indexed_forward_refuses_training_mode_and_bad_indices():
    net = make("resnet26_dw", "dw")
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="out of range"):
        net(x, domain=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        net(x, domain=torch.tensor([0.0, 1.0]))
    net.train()
    with pytest.raises(ValueError, match="eval"):
        net(x, domain=torch.tensor([0, 1]))


def test_compare_catches_a_wrong_logit_and_wrong_padding():
    ref = torch.tensor([[1.0, 2.0, float("-inf")]])
    assert compare(ref, ref.clone(), 1e-4) == 0.0
    with pytest.raises(ValueError, match="max abs difference"):
        compare(ref, torch.tensor([[1.0, 2.01, float("-inf")]]), 1e-4)
    with pytest.raises(ValueError, match="padding"):
        compare(ref, torch.tensor([[1.0, 2.0, 3.0]]), 1e-4)


def test_lite0_three_domains_onnx_agrees_with_pytorch(tmp_path):
    """ImageNet Lite0 trunk, three dw domains with their own (perturbed) filters, norms and random heads."""
    pytest.importorskip("onnxruntime")
    from mdl.core.pretrained import lite0_imagenet_state_dict

    torch.manual_seed(0)
    net = create_network("timm/tf_efficientnet_lite0", "dw", {})
    net.load_trunk_state_dict(lite0_imagenet_state_dict())
    for name, k in (("digits", 10), ("signs", 43), ("textures", 47)):
        net.add_domain(name, k)
    with torch.no_grad():
        for d in net.domains:
            for key, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if key.endswith("running_var") else t.add_(0.02 * torch.randn_like(t))
    meta = {"domains": [{"name": d} for d in net.domains]}
    report = export_network(net, "onnx", tmp_path / "lite0.onnx", meta, image_size=32, tol=1e-4)
    assert [c["batch"] for c in report["checks"]] == [6, 3]  # two batch sizes: the graph's batch is dynamic
    assert all(c["max_abs_diff"] <= 1e-4 * 50 for c in report["checks"])
    assert read_meta(tmp_path / "lite0.onnx") == meta
    # and independently of export_network's own check: a fresh mixed batch through onnxruntime
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "lite0.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    names = ["signs", "digits", "textures", "signs", "digits"]
    got = torch.from_numpy(sess.run(["logits"], {"image": x.numpy(), "domain": indexed(net, names).numpy()})[0])
    with torch.no_grad():
        ref = net.eval()(x, domain=names)
        for i, n in enumerate(names):  # each row is the plain per-domain forward
            torch.testing.assert_close(got[i, :net.domains[n]], net(x[i:i + 1], domain=n)[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.isinf(got), torch.isinf(ref))
    assert float((got[torch.isfinite(ref)] - ref[torch.isfinite(ref)]).abs().max()) <= 1e-4 * max(1.0, float(ref[torch.isfinite(ref)].abs().max()))
    # a batch without one domain (its layers run on an empty slice in the graph) and a one-image batch
    for names in (["digits", "signs", "signs", "digits"], ["textures"]):
        x = torch.randn(len(names), 3, 32, 32)
        got = torch.from_numpy(sess.run(["logits"], {"image": x.numpy(), "domain": indexed(net, names).numpy()})[0])
        assert got.shape == (len(names), 47)  # the graph pads to the widest exported head
        with torch.no_grad():
            for i, n in enumerate(names):
                torch.testing.assert_close(got[i, :net.domains[n]], net(x[i:i + 1], domain=n)[0], rtol=1e-4, atol=1e-4)
                assert torch.isinf(got[i, net.domains[n]:]).all()


def test_pt2_export_round_trip(tmp_path):
    """torch.export's ExportedProgram: dynamic batch, metadata, equal to PyTorch for any mix of domains
    (a domain with 0, 1 or many samples)."""
    net = make("resnet26_dw", "dw")
    report = export_network(net, "pt2", tmp_path / "m.pt2", {"domains": list(net.domains)}, image_size=16)
    assert report["checked_against"] == "torch.export.load"
    assert read_meta(tmp_path / "m.pt2") == {"domains": ["a", "b", "c"]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]
    module = load_pt2(tmp_path / "m.pt2")
    for names in (NAMES, ["b", "b", "a"], ["c"]):
        x = torch.randn(len(names), 3, 16, 16)
        with torch.no_grad():
            got = module(x, indexed(net, names))
            torch.testing.assert_close(got, net(x, domain=indexed(net, names)), rtol=1e-5, atol=1e-5)
            for i, n in enumerate(names):
                torch.testing.assert_close(got[i:i + 1, :net.domains[n]], net(x[i:i + 1], domain=n), rtol=1e-4, atol=1e-4)


def test_torchscript_export_round_trip(tmp_path):
    net = make("resnet26_dw", "dw")
    report = export_network(net, "torchscript", tmp_path / "m.pt", {"domains": list(net.domains)}, image_size=16)
    assert report["checked_against"] == "torch.jit.load"
    assert read_meta(tmp_path / "m.pt") == {"domains": ["a", "b", "c"]}
    module = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x, indexed(net)), net(x, domain=NAMES), rtol=1e-5, atol=1e-5)


def test_failed_check_leaves_no_file(tmp_path, monkeypatch):
    import mdl.core.export as export

    net = make("resnet26_dw", "dw")
    monkeypatch.setattr(export, "reference_logits", lambda n, x, idx: n(x, domain=idx) + 1.0)
    with pytest.raises(ValueError, match="disagrees"):
        export_network(net, "torchscript", tmp_path / "m.pt", {}, image_size=16)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unsupported format"):
        export_network(net, "tflite", tmp_path / "m.x", {}, image_size=16)
    assert json.dumps({}) == "{}"


# ---------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def served_home(tmp_path_factory):
    from _serve_helpers import make_registry

    home = tmp_path_factory.mktemp("export") / "home"
    make_registry(home, {"alpha": 3, "beta": 5, "gamma": 7})
    return home


def test_export_command_onnx_matches_mdl_predict(served_home, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from _serve_helpers import png_bytes
    from conftest import invoke

    out = tmp_path / "three.onnx"
    res = invoke("export", "gamma", "alpha", "beta", "--format", "onnx", "--out", str(out), "--json", home=served_home)
    assert res.code == 0, res.stderr
    report = res.json()
    assert [d["name"] for d in report["domains"]] == ["gamma", "alpha", "beta"]
    # the command's own bound: 1e-4 absolute + 1e-4 x |logit| (this toy's perturbed logits reach the tens;
    # the Lite0 test above holds the absolute 1e-4)
    assert report["checked_against"] == "onnxruntime (CPU)" and report["tolerance"] == 1e-4
    assert all(c["max_abs_diff"] <= 1e-3 for c in report["checks"])
    meta = read_meta(out)
    shown = invoke("show", "alpha", "--json", home=served_home).json()["versions"][0]
    assert meta["domains"][1]["classes"] == ["alpha-class0", "alpha-class1", "alpha-class2"]
    assert (meta["domains"][1]["mean"], meta["domains"][1]["crop"]) == (shown["data"]["mean"], shown["data"]["crop"])
    # preprocess with the metadata alone, run onnxruntime, and get what `mdl predict` says
    from mdl.core.data.dataset import eval_batch
    from mdl.core.data.transforms import decode_rgb_bytes

    imgs = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(imgs):
        p.write_bytes(png_bytes(100 + i))
    order = [("beta", imgs[0]), ("gamma", imgs[1]), ("beta", imgs[2])]
    names = [d["name"] for d in meta["domains"]]
    prep = {m["name"]: (m["mean"], m["std"], m["image_size"], m["crop"]) for m in meta["domains"]}
    x = torch.cat([eval_batch([decode_rgb_bytes(p.read_bytes())[0]], *prep[d]) for d, p in order])
    idx = torch.tensor([names.index(d) for d, _ in order])
    logits = torch.from_numpy(ort.InferenceSession(str(out)).run(["logits"], {"image": x.numpy(), "domain": idx.numpy()})[0])
    res = invoke("predict", "beta", str(imgs[0]), f"gamma@{imgs[1]}", f"beta@{imgs[2]}", "--top-k", "1", "--json",
                 "--device", "cpu", home=served_home)
    for (d, _), row, want in zip(order, logits, res.json()):
        m = meta["domains"][names.index(d)]
        probs = row[: m["num_classes"]].softmax(0)
        assert m["classes"][int(probs.argmax())] == want["top"][0]["class"]
        assert abs(float(probs.max()) - want["top"][0]["probability"]) <= 2e-4


@pytest.mark.parametrize("args,message", [
    (["alpha", "nope", "--format", "onnx"], "unknown domain 'nope'"),
    (["alpha", "--format", "tflite"], "unsupported --format 'tflite'"),
    (["alpha", "alpha", "--format", "onnx"], "named twice"),
])
def test_export_command_bad_input_one_line_exit_1(served_home, tmp_path, args, message):
    from conftest import invoke, tree_digest

    before = tree_digest(served_home)
    res = invoke("export", *args, "--out", str(tmp_path / "m.onnx"), home=served_home)
    assert res.code == 1 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "m.onnx").exists() and tree_digest(served_home) == before


def test_export_command_unwritable_out(served_home, tmp_path):
    from conftest import invoke

    res = invoke("export", "alpha", "--out", str(tmp_path / "missing" / "m.onnx"), home=served_home)
    assert res.code == 1 and "does not exist" in res.stderr
    res = invoke("export", "alpha", "--out", str(tmp_path), home=served_home)
    assert res.code == 1 and "is a folder" in res.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        res = invoke("export", "alpha", "--out", str(locked / "m.onnx"), home=served_home)
        assert res.code == 1 and "cannot write" in res.stderr
    finally:
        locked.chmod(0o700)
