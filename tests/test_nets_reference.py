"""The papers' reference networks load into mdl's through the key mapping and give the same logits
(float64, 1e-9), per task and in one mixed batch; the mapping refuses what it cannot place."""
import pytest
import torch

from _reference_nets import GuoResNet26, RebuffiResNet26, randomise
from mdl.core import create_network
from mdl.core.nets.reference import LAYOUTS, load_reference, split_reference_state

CASES = {
    "guo2019": lambda: GuoResNet26([5, 7], factor=0.125),
    "rebuffi2018-parallel": lambda: RebuffiResNet26([5, 7], factor=0.25, mode="parallel"),
    "rebuffi2018-series": lambda: RebuffiResNet26([5, 7], factor=0.25, mode="series"),
    "rebuffi2018-bn": lambda: RebuffiResNet26([5, 7], factor=0.25, mode="bn"),
}
EXPECTED_METHOD = {"guo2019": "dw", "rebuffi2018-parallel": "parallel-adapter",
                   "rebuffi2018-series": "series-adapter", "rebuffi2018-bn": "bn"}


def mapped(case):
    ref = randomise(CASES[case](), seed=len(case))
    ckpt = split_reference_state(ref.state_dict(), case.split("-")[0])
    net = create_network(ckpt.arch, method=ckpt.method, width=ckpt.width).double()
    load_reference(net, ckpt, ["a", "b"])
    return ref, ckpt, net.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_reference_logits_equal_to_1e9(case):
    ref, ckpt, net = mapped(case)
    assert ckpt.method == EXPECTED_METHOD[case]
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        for t, name in enumerate(["a", "b"]):
            want = ref(x, t)
            got = net(x, domain=name)
            assert want.abs().max() > 1e-3  # not a degenerate all-zero comparison
            assert (got - want).abs().max().item() < 1e-9
        mixed = net(x, domain=["a", "b", "a", "b", "b", "a"])
        for i, t in enumerate([0, 1, 0, 1, 1, 0]):
            k = ckpt.num_classes(t)
            assert (mixed[i, :k] - ref(x[i:i + 1], t)[0]).abs().max().item() < 1e-9


def test_mapping_is_sensitive_to_each_task():
    """Swapping the task order must change the logits (the mapping really reads per-task tensors)."""
    ref, _, net = mapped("guo2019")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (net(x, "a")[:, :5] - ref(x, 1)[:, :5]).abs().max() > 1e-3


def test_unexpected_and_missing_keys_are_refused():
    ref = randomise(CASES["guo2019"]())
    state = dict(ref.state_dict())
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        split_reference_state(state | {"extra.weight": torch.zeros(1)}, "guo2019")
    with pytest.raises(ValueError, match="not a rebuffi2018 state dict"):
        split_reference_state(state, "rebuffi2018")
    with pytest.raises(ValueError, match="unknown reference layout"):
        split_reference_state(state, "nope")
    del state["blocks.1.2.bns1.1.running_var"]
    ckpt = split_reference_state(state, "guo2019")
    net = create_network(ckpt.arch, method=ckpt.method, width=ckpt.width).double()
    with pytest.raises(ValueError, match="s2.b2.bn1.running_var"):
        load_reference(net, ckpt, ["a", "b"])
    with pytest.raises(ValueError, match="holds 2 task"):
        load_reference(create_network(ckpt.arch, method="dw", width=ckpt.width), ckpt, ["a"])


def test_layouts_name_where_they_were_read():
    assert {s.arch for s in LAYOUTS.values()} == {"resnet26", "resnet26_dw"}
    assert all(s.read_from for s in LAYOUTS.values())


def test_cli_imports_a_reference_checkpoint_with_equal_logits(tmp_path, mdl, home):
    """`mdl trunk import FILE --reference guo2019 --names ...`: a trunk plus one domain per task, whose
    registry-loaded network answers like the reference network (float32 now: 1e-5)."""
    from conftest import tree_digest

    from mdl.workflows.common import NetworkLoader
    from mdl.registry.store import Registry

    ref = randomise(CASES["guo2019"]()).float()
    path = tmp_path / "guo.pth"
    torch.save(ref.state_dict(), path)
    assert mdl("init", home=home).code == 0
    before = tree_digest(home)
    bad = mdl("trunk", "import", str(path), "--reference", "guo2019", "--names", "only_one", home=home)
    assert bad.code == 1 and "holds 2 tasks" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = mdl("trunk", "import", str(path), "--reference", "rebuffi2018", "--names", "a,b", home=home)
    assert bad.code == 1 and "not a rebuffi2018 state dict" in bad.stderr
    assert tree_digest(home) == before
    out = mdl("trunk", "import", str(path), "--reference", "guo2019", "--names", "src,digits", "--json", home=home)
    assert out.code == 0, out.stderr
    res = out.json()
    assert res["trunk"] == "resnet26_dw:v1" and [d["name"] for d in res["domains"]] == ["src", "digits"]
    assert res["provenance"]["reference_layout"] == "guo2019"
    reg = Registry.open(home)
    versions = [reg.domain_version("src"), reg.domain_version("digits")]
    assert {v.method for v in versions} == {"dw"} and versions[0].config["role"] == "trunk source"
    assert versions[0].trunk.width == 0.125
    net = NetworkLoader(reg).network(versions[0].trunk, "dw", versions).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        for t, name in enumerate(["src", "digits"]):
            assert (net(x, name) - ref(x, t)).abs().max().item() < 1e-5
    # imported domains are usable: ImageNet's statistics recorded (stated), so predict and export work
    from PIL import Image
    assert versions[1].data["mean"] == [0.485, 0.456, 0.406] and versions[1].data["std"] == [0.229, 0.224, 0.225]
    assert versions[1].data["stats_from"].startswith("ImageNet") and versions[1].data["crop"] == 64
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "a.png")
    pred = mdl("predict", "digits", str(tmp_path / "a.png"), "--json", home=home)
    assert pred.code == 0, pred.stderr
    assert pred.json()[0]["top"][0]["class"] in [str(i) for i in range(7)]
    exp = mdl("export", "src", "digits", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), home=home)
    assert exp.code == 0, exp.stderr


def test_reference_import_takes_the_preprocessing(tmp_path, mdl, home):
    from conftest import tree_digest

    from mdl.registry.store import Registry

    path = tmp_path / "guo.pth"
    torch.save(randomise(CASES["guo2019"]()).float().state_dict(), path)
    assert mdl("init", home=home).code == 0
    before = tree_digest(home)
    for bad, message in ((["--mean", "0.5,0.5"], "three comma-separated"), (["--std", "0.2,0,0.2"], "each > 0"),
                         (["--image-size", "32", "--crop", "40"], "larger than --image-size")):
        r = mdl("trunk", "import", str(path), "--reference", "guo2019", "--names", "src,svhn", *bad, home=home)
        assert r.code == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree_digest(home) == before
    ok = mdl("trunk", "import", str(path), "--reference", "guo2019", "--names", "src,svhn", "--mean", "0.44,0.44,0.47",
             "--std", "0.2,0.2,0.2", "--image-size", "36", "--crop", "32", home=home)
    assert ok.code == 0, ok.stderr
    data = Registry.open(home).domain_version("svhn").data
    assert (data["mean"], data["std"], data["image_size"], data["crop"], data["stats_from"]) == \
        ([0.44, 0.44, 0.47], [0.2, 0.2, 0.2], 36, 32, "given")


def _corrupt_middle(path, n=4096):
    """Overwrite n bytes in the middle of the file (same length): what a bad disk or transfer does."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes((i * 37 + 11) % 256 for i in range(n))
    path.write_bytes(bytes(data))


def _guo_state(change=None):
    state = randomise(GuoResNet26([5, 7], factor=0.5)).float().state_dict()
    for key, fn in (change or {}).items():
        state[key] = fn(state[key])
    return state


@pytest.mark.parametrize("case,message", [
    ("corrupt", "fails its CRC check"),
    ("huge", "beyond float32's range"),
    ("nan", "non-finite"),
    ("no-bias", "missing key 'fcs.1.bias'"),
])
def test_foreign_checkpoint_checked_whole_registry_unchanged(tmp_path, mdl, home, case, message):
    """A reference checkpoint with 4 KiB overwritten in its middle used to import with exit 0 and predict
    NaN (a weight read back as 1.8e308, inf in float32); a missing classifier bias failed as 'head.bias'."""
    from conftest import tree_digest

    path = tmp_path / "guo.pth"
    if case == "corrupt":
        torch.save(_guo_state(), path)
        _corrupt_middle(path)
    elif case == "huge":  # a float64 tensor whose value float32 cannot hold
        torch.save(_guo_state({"fcs.1.weight": lambda t: t.double().index_fill(1, torch.tensor([0]), 1e300)}), path)
    elif case == "nan":
        torch.save(_guo_state({"conv1.pointwise.weight": lambda t: t.index_fill(0, torch.tensor([0]), float("nan"))}), path)
    else:
        state = _guo_state()
        del state["fcs.1.bias"]
        torch.save(state, path)
    assert mdl("init", home=home).code == 0
    before = tree_digest(home)
    bad = mdl("trunk", "import", str(path), "--reference", "guo2019", "--names", "src,digits", home=home)
    assert bad.code == 1, bad.stdout
    assert message in bad.stderr and str(path) in bad.stderr.replace("\n", ""), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert tree_digest(home) == before


def test_safetensors_and_torch_files_checked_for_values(tmp_path):
    from safetensors.torch import save_file

    from mdl.core.pretrained import read_state_dict

    ok = {"a.weight": torch.randn(4, 4), "steps": torch.tensor(3)}
    save_file(ok, tmp_path / "ok.safetensors")
    assert set(read_state_dict(tmp_path / "ok.safetensors")) == {"a.weight", "steps"}
    save_file({"a.weight": torch.tensor([1.0, float("inf")])}, tmp_path / "inf.safetensors")
    with pytest.raises(ValueError, match=r"tensor a\.weight holds non-finite"):
        read_state_dict(tmp_path / "inf.safetensors")
