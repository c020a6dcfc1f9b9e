"""Soft-sharing gate (eq. 8-9)."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from mdl.core import create_network


def make():
    torch.manual_seed(0)
    net = create_network("resnet26_dw", method="dw", domains={"a": 5, "b": 3, "c": 4}, width=0.125)
    with torch.no_grad():
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                if not k.endswith("running_var"):
                    t.add_(0.05 * torch.randn_like(t))
    return net.eval()


@pytest.mark.parametrize("placement,n_layers", [("early", 8), ("middle", 8), ("late", 8), ("all", 25)])  # all: the stem's depthwise too
def test_one_hot_gate_reproduces_target(placement, n_layers):
    net = make()
    gate = net.add_gate("b", placement=placement)
    assert net.gate_meta("b") == {"placement": placement, "mixed_domains": ["a", "b", "c"]}
    assert len(gate.mlps) == n_layers
    with torch.no_grad():
        for mlp in gate.mlps.values():  # all mass on the target (index 1): softmax gives exactly one-hot
            mlp.fc2.weight.zero_()
            mlp.fc2.bias.copy_(torch.tensor([0.0, 1e4, 0.0]))
        x = torch.randn(3, 3, 16, 16)
        own, gated = net(x, "b"), net(x, "b", use_gate=True)
        torch.testing.assert_close(gated, own, rtol=1e-5, atol=1e-5 * own.abs().max().item())
        # a gate on another domain changes the output
        for mlp in gate.mlps.values():
            mlp.fc2.bias.copy_(torch.tensor([1e4, 0.0, 0.0]))
        assert not torch.allclose(net(x, "b", use_gate=True), own)


def test_gate_training_touches_only_gate_and_roundtrips():
    net = make()
    net.add_gate("a", placement="late", mixed_domains=["c", "a"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = net.set_trainable_gate("a")
    net.train()
    opt = torch.optim.SGD(params, lr=0.5)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    F.cross_entropy(net(x, "a", use_gate=True), y).backward()
    opt.step()
    after = net.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same if not k.startswith("gates.") else True, f"{k} changed"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("gates.a."))
    sd = net.gate_state_dict("a")
    other = make()
    other.load_gate_state_dict("a", load(save(sd)), mixed_domains=["c", "a"], placement="late")
    assert other.gate_meta("a") == net.gate_meta("a")
    net.eval()
    with torch.no_grad():
        assert torch.equal(other(x, "a", use_gate=True), net(x, "a", use_gate=True))
    assert net.parameter_counts()["gates"]["a"] == sum(p.numel() for p in params)


def test_gate_errors():
    net = make()
    with pytest.raises(ValueError, match="unknown gate placement 'top'"):
        net.add_gate("a", placement="top")
    with pytest.raises(KeyError, match="no gate for domain 'a'"):
        net(torch.randn(1, 3, 16, 16), "a", use_gate=True)
    bn = create_network("resnet26", method="bn", domains={"a": 2}, width=0.125)
    with pytest.raises(ValueError, match="need method 'dw'"):
        bn.add_gate("a")
