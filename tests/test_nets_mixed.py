"""Mixed batches: the stacked single pass equals per-domain forwards; padding is -inf."""
import pytest
import torch

from mdl.core import create_network
from mdl.core.nets import layers

NAMES = ["a", "b", "c", "a", "c", "b", "b", "a"]


def make(arch, method):
    torch.manual_seed(0)
    net = create_network(arch, method=method, domains={"a": 5, "b": 3, "c": 7}, width=0.125)
    with torch.no_grad():  # make every domain's tensors differ (BN stats included)
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if k.endswith("running_var") else t.add_(0.05 * torch.randn_like(t))
    return net.eval()


def check_against_single(net, x, out):
    assert out.shape == (len(NAMES), 7)
    for i, d in enumerate(NAMES):
        k = net.domains[d]
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(out[i, k:]).all() and (out[i, k:] < 0).all()


@pytest.mark.parametrize("method", ["dw", "dw-sharing", "finetune", "classifier-only"])
def test_stacked_equals_per_domain(method, monkeypatch):
    net = make("resnet26_dw", method)
    calls = []
    real = layers.per_sample_depthwise
    monkeypatch.setattr(layers, "per_sample_depthwise", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        out = net(x, domain=NAMES)
    check_against_single(net, x, out)
    if method in ("dw", "finetune"):  # per-domain depthwise filters -> gathered grouped conv: 24 in blocks + the stem
        assert len(calls) == 25
    assert out.argmax(1).lt(torch.tensor([net.domains[d] for d in NAMES])).all()


@pytest.mark.parametrize("method", ["bn", "parallel-adapter", "series-adapter"])
def test_grouped_mixed_batch_for_other_methods(method):
    net = make("resnet26", method)
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        check_against_single(net, x, net(x, domain=NAMES))


def test_mixed_batch_in_train_mode_uses_per_domain_batch_stats():
    net = make("resnet26_dw", "dw").train()
    x = torch.randn(len(NAMES), 3, 16, 16)
    out = net(x, domain=NAMES)
    out[torch.isfinite(out)].sum().backward()  # differentiable through the padding
    assert net.domain_tensors("c")["head.weight"].grad is not None


def test_stacked_channels_last_equals_nchw():
    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        a = net(x, domain=NAMES)
        b = net(x.contiguous(memory_format=torch.channels_last), domain=NAMES)
    fin = torch.isfinite(a)
    assert torch.equal(fin, torch.isfinite(b))
    torch.testing.assert_close(b[fin], a[fin], rtol=1e-4, atol=1e-4 * a[fin].abs().max().item())


def test_stack_cache_sees_in_place_updates():
    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        net(x, domain=NAMES)  # fills the cache
        net.domain_tensors("b")["s1.b0.dw1.weight"].mul_(2.0)
        net.domain_tensors("c")["s2.b1.bn2.running_var"].mul_(3.0)
        check_against_single(net, x, net(x, domain=NAMES))
