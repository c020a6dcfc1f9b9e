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

    from mdl.cli.jobs.common import NetworkLoader
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
    # no recorded mean/std: prediction says so in one line instead of guessing a normalisation
    from PIL import Image
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "a.png")
    pred = mdl("predict", "digits", str(tmp_path / "a.png"), home=home)
    assert pred.code == 1 and "mean/std" in pred.stderr
