"""`mdl compress-adapters` and `mdl joint-train` through the command line at toy size: registered like
any version, loaded back exactly (hash-checked), bad input refused with one line and the registry
unchanged."""
from __future__ import annotations

import pytest
import torch
from conftest import invoke, tree_digest
from test_workflow_e2e import make_tree

TOY = ["--width", "0.125", "--image-size", "16", "--batch-size", "32", "--device", "cpu"]
TRAIN = ["--batch-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("mdata")
    return {"src": make_tree(base / "src", 4, 24, seed=1), "alpha": make_tree(base / "alpha", 3, 24, seed=2),
            "beta": make_tree(base / "beta", 4, 20, seed=3), "gamma": make_tree(base / "gamma", 3, 20, seed=4)}


@pytest.fixture(scope="module")
def reg_home(tmp_path_factory, trees):
    """resnet26 trunk; alpha and beta with parallel adapters, gamma with bn."""
    home = tmp_path_factory.mktemp("mchain") / "home"
    env = {"MDL_CACHE": str(home.parent / "cache")}
    steps = [["init"],
             ["pretrain", "--data", str(trees["src"]), "--name", "src", "--arch", "resnet26", "--epochs", "1", *TOY],
             ["add-domain", "alpha", "--data", str(trees["alpha"]), "--method", "parallel-adapter", "--epochs", "1", *TRAIN],
             ["add-domain", "beta", "--data", str(trees["beta"]), "--method", "parallel-adapter", "--epochs", "1", *TRAIN],
             ["add-domain", "gamma", "--data", str(trees["gamma"]), "--method", "bn", "--epochs", "1", *TRAIN]]
    for step in steps:
        res = invoke(*step, home=home, env=env)
        assert res.code == 0, (step, res.stderr)
    return home, env


def _network(home, names, method):
    from mdl.workflows.common import NetworkLoader
    from mdl.registry.store import Registry

    reg = Registry.open(home)
    versions = [reg.domain_version(n) for n in names]
    return reg, versions, NetworkLoader(reg).network(versions[0].trunk, method, versions).eval()


@pytest.mark.parametrize("args,message", [
    (["alpha"], "at least 2 parallel-adapter domains"),
    (["alpha", "nosuch"], "unknown domain 'nosuch'"),
    (["alpha", "gamma"], "gamma v1 (bn)"),
    (["alpha", "alpha"], "named twice"),
    (["alpha", "beta", "--rank-ratio", "0"], "--rank-ratio must be in (0, 1]"),
    (["alpha", "beta", "--rank-ratio", "1.5"], "--rank-ratio must be in (0, 1]"),
    (["alpha", "beta", "--rank-ratio", "nan"], "--rank-ratio must be in (0, 1]"),
])
def test_compress_bad_input_one_line_registry_unchanged(reg_home, args, message):
    home, env = reg_home
    before = tree_digest(home)
    res = invoke("compress-adapters", *args, "--device", "cpu", home=home, env=env)
    assert res.code == 1, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert tree_digest(home) == before


def test_full_rank_versions_load_from_registry_with_the_uncompressed_logits(reg_home):
    home, env = reg_home
    _, _, uncompressed = _network(home, ["alpha", "beta"], "parallel-adapter")
    x = torch.randn(5, 3, 14, 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = {d: uncompressed(x, d) for d in ("alpha", "beta")}
    res = invoke("compress-adapters", "alpha", "beta", "--rank-ratio", "1", "--epochs", "0", "--json",
                 "--device", "cpu", home=home, env=env)
    assert res.code == 0, res.stderr
    out = res.json()
    assert [v["method"] for v in out["versions"]] == ["parallel-adapter-svd"] * 2
    reg, versions, net = _network(home, ["alpha", "beta"], "parallel-adapter-svd")  # hash-checked loads
    with torch.no_grad():
        for d in ("alpha", "beta"):
            assert torch.allclose(net(x, d), want[d], atol=1e-4)
    from mdl.workflows.compress import check_group

    assert check_group(reg, versions) == out["group"]["group"]
    # accuracy recorded without fine-tuning = the uncompressed versions' (same function at full rank)
    for row in out["domains"]:
        assert abs(row["accuracy_compressed"] - row["accuracy_uncompressed"]) < 1e-6


def test_half_rank_finetuned_versions_reload_exactly(reg_home):
    home, env = reg_home
    from mdl.registry.store import Registry

    reg = Registry.open(home)
    sources = {n: reg.domain_version(n, 1) for n in ("alpha", "beta")}  # the parallel-adapter versions
    # compress the v1 parallel adapters again (the current versions are the full-rank svd ones)
    for n in ("alpha", "beta"):
        assert invoke("remove", n, "--version", str(reg.domain_version(n).version), home=home, env=env).code == 0
    res = invoke("compress-adapters", "--epochs", "1", "--json", *TRAIN, home=home, env=env)
    assert res.code == 0, res.stderr
    out = res.json()
    group = out["group"]
    assert 0.4 < group["own_fraction"] < 0.6 and group["group_fraction"] < 1.0
    reg, versions, net = _network(home, ["alpha", "beta"], "parallel-adapter-svd")
    from mdl.workflows.common import open_version_data
    from mdl.core.data import make_loader
    from mdl.core.training import DeviceSetup, accuracy

    dev = DeviceSetup.resolve("cpu")
    for v in versions:
        assert v.config["svd"]["source_version"] == 1 and v.config["svd"]["group"] == group["group"]
        assert v.domain_params < sources[v.name].domain_params
        dd = open_version_data(v)
        acc, _ = accuracy(net, make_loader(dd, "val", 256, train=False), dev, domain=v.name)
        assert abs(acc - v.accuracy) < 1e-6  # the registered tensors are the ones that were evaluated


def test_joint_train_bn_and_instance_norm(reg_home, trees):
    home, env = reg_home
    srcs = [str(trees["alpha"]), str(trees["beta"])]
    res = invoke("joint-train", *srcs, "--name", "ja", "--name", "jb", "--variant", "bn", "--epochs", "2", "--json",
                 *TRAIN, home=home, env=env)
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["trunk"] == "resnet26:v2"
    from mdl.registry.store import Registry
    recipe = Registry.open(home).trunk("resnet26", 2).config["recipe"]
    assert (recipe["name"], recipe["lr"], recipe["bn_stats"]) == ("mdl", 0.01, "batch")  # trained here: as before
    assert [(d["name"], d["method"], d["trunk"]) for d in out["domains"]] == [("ja", "bn", "resnet26:v2"),
                                                                              ("jb", "bn", "resnet26:v2")]
    res = invoke("joint-train", *srcs, "--name", "ia", "--name", "ib", "--variant", "instance-norm", "--epochs", "1",
                 "--trunk", "resnet26:v1", "--json", *TRAIN, home=home, env=env)
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["trunk"] == "resnet26_in:v1"
    from mdl.workflows.common import open_version_data
    from mdl.core.data import make_loader
    from mdl.core.training import DeviceSetup, accuracy

    dev = DeviceSetup.resolve("cpu")
    for names, method in ((["ja", "jb"], "bn"), (["ia", "ib"], "classifier-only")):
        _, versions, net = _network(home, names, method)
        for v in versions:
            assert v.method == method and v.config["joint"]["domains"] == names
            if method == "classifier-only":  # instance-norm: nothing per domain but the head
                assert set(net.domain_state_dict(v.name)) == {"head.weight", "head.bias"}
                assert v.domain_params == v.num_classes * (net.head.domains[v.name].in_features + 1)
            acc, _ = accuracy(net, make_loader(open_version_data(v), "val", 256, train=False), dev, domain=v.name)
            assert abs(acc - v.accuracy) < 1e-6  # the jointly trained trunk + versions reload exactly


@pytest.mark.parametrize("args,message", [
    (["ALPHA"], "at least 2 data sources"),
    (["ALPHA", "BETA", "--name", "x"], "one per source"),
    (["ALPHA", "BETA", "--name", "x", "--name", "x"], "used twice"),
    (["ALPHA", "BETA", "--variant", "instance-norm", "--trunk", "nosuch"], "no trunk nosuch"),
])
def test_joint_bad_input_one_line_registry_unchanged(reg_home, trees, args, message):
    home, env = reg_home
    args = [str(trees["alpha"]) if a == "ALPHA" else str(trees["beta"]) if a == "BETA" else a for a in args]
    before = tree_digest(home)
    res = invoke("joint-train", *args, "--epochs", "1", *TRAIN, home=home, env=env)
    assert res.code == 1, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert tree_digest(home) == before


def test_score_list_and_plain_output_with_the_new_versions(reg_home):
    home, env = reg_home
    from mdl.registry.store import Registry

    reg = Registry.open(home)
    for n in ("alpha", "beta"):  # back to the parallel-adapter versions (v1)
        while reg.domain_version(n).method != "parallel-adapter":
            assert invoke("remove", n, "--version", str(reg.domain_version(n).version), home=home, env=env).code == 0
    res = invoke("compress-adapters", "--epochs", "0", *TRAIN, home=home, env=env)  # the table, not JSON
    assert res.code == 0, res.stderr
    assert "Compressed adapters, group" in res.stdout and "shared beta" in res.stderr
    res = invoke("score", "--device", "cpu", "--json", home=home, env=env)
    assert res.code == 0, res.stderr
    methods = {d["name"]: d["method"] for d in res.json()["domains"]}
    assert methods["alpha"] == "parallel-adapter-svd"
    assert invoke("verify", home=home, env=env).code == 0
