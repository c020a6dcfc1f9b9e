"""Gate scope: `gate` trains only the gate (the paper's text); `gate+domain` also trains the target's
norms, last pointwise conv, end BN and head (the released main_sharing.py) and registers them as a new
version of the target, with the gate on that version; depthwise filters never change."""
from __future__ import annotations

import pytest
import torch

from mdl.core import create_network


def test_scope_selects_what_trains():
    net = create_network("resnet26_dw", method="dw", domains={"a": 3, "b": 3}, width=0.125)
    net.add_gate("a", placement="late", mixed_domains=["a", "b"], scope="gate")
    only_gate = {id(p) for p in net.set_trainable_gate("a")}
    assert only_gate == {id(p) for p in net.gate_parameters("a")}
    net.add_gate("a", placement="late", mixed_domains=["a", "b"], scope="gate+domain")
    trained = {id(p) for p in net.set_trainable_gate("a")}
    own = dict(net.domain_tensors("a"))
    depthwise = {id(t) for k, t in own.items() if ".dw" in k}
    kept = {id(t) for k, t in own.items() if k.startswith(("head.", "end_bn.", "s3.b3.pw2.", "s1.b0.bn1."))
            and k.endswith((".weight", ".bias"))}  # parameters (running statistics are buffers)
    assert depthwise and not (depthwise & trained) and kept <= trained
    assert not ({id(t) for t in net.domain_tensors("b").values()} & trained)
    with pytest.raises(ValueError, match="unknown gate scope"):
        net.add_gate("a", mixed_domains=["a", "b"], scope="everything")


def test_gate_scope_uses_batch_statistics_only_when_norms_train():
    torch.manual_seed(0)
    net = create_network("resnet26_dw", method="dw", domains={"a": 3, "b": 3}, width=0.125)
    x = torch.randn(4, 3, 16, 16)
    stats = lambda: net.domain_state_dict("a")["end_bn.running_mean"].clone()  # noqa: E731
    net.add_gate("a", mixed_domains=["a", "b"], scope="gate")
    before = stats()
    net.train()
    net(x, "a", use_gate=True)
    assert torch.equal(stats(), before)  # frozen
    net.add_gate("a", mixed_domains=["a", "b"], scope="gate+domain")
    net(x, "a", use_gate=True)
    assert not torch.equal(stats(), before)  # batch statistics, as the released code trains


@pytest.mark.slow
def test_cli_gate_domain_scope_registers_a_new_target_version(tmp_path, mdl, home):
    from conftest import tree_digest
    from test_workflow_e2e import TOY, TRAIN, make_tree

    from mdl.workflows.gates import gated_network
    from mdl.registry.store import Registry

    trees = {n: make_tree(tmp_path / n, k, 16, seed=i) for i, (n, k) in enumerate((("src", 4), ("alpha", 3), ("beta", 3)))}
    assert mdl("init", home=home).code == 0
    assert mdl("pretrain", "--data", str(trees["src"]), "--name", "src", "--epochs", "1", *TOY, home=home).code == 0
    for n in ("alpha", "beta"):
        assert mdl("add-domain", n, "--data", str(trees[n]), "--epochs", "1", *TRAIN, home=home).code == 0
    reg = Registry.open(home)
    v1 = reg.domain_version("alpha")
    before = tree_digest(home)
    bad = mdl("gate-train", "--domain", "alpha", "--scope", "all", *TRAIN, home=home)
    assert bad.code == 2 and tree_digest(home) == before
    only = mdl("gate-train", "--domain", "alpha", "--epochs", "1", "--placement", "late", "--json", *TRAIN, home=home)
    assert only.code == 0, only.stderr
    assert only.json()[0]["scope"] == "gate" and reg.domain_version("alpha").version == v1.version
    out = mdl("gate-train", "--domain", "alpha", "--epochs", "1", "--placement", "late", "--scope", "gate+domain",
              "--json", *TRAIN, home=home)
    assert out.code == 0, out.stderr
    row = out.json()[0]
    v2 = reg.domain_version("alpha")
    assert row["scope"] == "gate+domain" and v2.version == v1.version + 1 and row["version"] == v2.version
    assert v2.config["trained_with_gate"]["from_version"] == v1.version
    old, new = reg.load_tensors(v1.artifact), reg.load_tensors(v2.artifact)
    assert all(torch.equal(old[k], new[k]) for k in old if ".dw" in k)          # depthwise frozen
    assert not torch.equal(old["head.weight"], new["head.weight"])              # head trained
    assert not torch.equal(old["end_bn.running_mean"], new["end_bn.running_mean"])
    gate = reg.current_gate(v2.id)
    assert gate is not None and v2.id in gate.mixed and v1.id not in gate.mixed
    net = gated_network(reg, gate)
    assert torch.equal(net.domain_state_dict("alpha")["head.weight"], new["head.weight"])
