"""Mixed batches: the stacked single pass equals per-domain forwards; padding is -inf."""
import pytest
import torch

from mdl.core import create_network
from mdl.core.nets import layers, wrappers

NAMES = ["a", "b", "c", "a", "c", "b", "b", "a"]


def make(arch, method):
    torch.manual_seed(0)
    width = 0.125 if not arch.startswith("timm/") else 1.0  # timm models come at their own size
    net = create_network(arch, method=method, domains={"a": 5, "b": 3, "c": 7}, width=width)
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


@pytest.mark.parametrize("mode", ["slices", "per-sample", "auto"])
@pytest.mark.parametrize("method", ["dw", "dw-sharing", "finetune", "classifier-only"])
def test_stacked_equals_per_domain(method, mode, monkeypatch):
    net = make("resnet26_dw", method)
    calls = []
    real = layers.per_sample_depthwise
    monkeypatch.setattr(layers, "per_sample_depthwise", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(wrappers, "MIXED_DEPTHWISE", mode)
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        out = net(x, domain=NAMES)
    check_against_single(net, x, out)
    # per-domain depthwise filters (24 in blocks + the stem): one grouped conv each in per-sample mode, and
    # under auto here (8 images over 3 domains: fewer than PER_SAMPLE_BELOW each)
    assert len(calls) == (25 if method in ("dw", "finetune") and mode != "slices" else 0)
    assert out.argmax(1).lt(torch.tensor([net.domains[d] for d in NAMES])).all()


def test_auto_takes_slices_once_each_domain_has_enough_images(monkeypatch):
    net = make("resnet26_dw", "dw")
    calls = []
    real = layers.per_sample_depthwise
    monkeypatch.setattr(layers, "per_sample_depthwise", lambda *a: calls.append(1) or real(*a))
    names = [d for d in ("a", "b", "c") for _ in range(wrappers.PER_SAMPLE_BELOW)]
    x = torch.randn(len(names), 3, 16, 16)
    with torch.no_grad():
        out = net(x, domain=names)
    assert calls == []
    for i in (0, len(names) - 1):
        torch.testing.assert_close(out[i:i + 1, :net.domains[names[i]]], net(x[i:i + 1], domain=names[i]),
                                   rtol=1e-4, atol=1e-4)


SIZES = {  # a domain with 0, 1 and many samples; sorted, reversed, interleaved
    "one-of-b": ["a", "a", "c", "b", "c", "a", "c"],
    "no-c": ["b", "a", "a", "b", "a"],
    "sorted": ["a", "a", "a", "b", "b", "c"],
    "reversed": ["c", "b", "b", "a", "a", "a"],
}


@pytest.mark.parametrize("arch", ["resnet26_dw", "timm/mobilenetv3_large_100", "timm/tf_efficientnet_lite0",
                                  "timm/convnext_atto"])
@pytest.mark.parametrize("case", list(SIZES))
def test_mixed_equals_per_domain_for_any_counts_and_order(arch, case):
    names = SIZES[case]
    net = make(arch, "dw")
    x = torch.randn(len(names), 3, 32, 32)
    with torch.no_grad():
        out = net(x, domain=names)
        idx = torch.tensor([list(net.domains).index(n) for n in names])
        indexed = net(x, domain=idx)
    present = max(net.domains[d] for d in names)
    assert out.shape == (len(names), present)  # padded to the widest head of the batch's domains
    for i, d in enumerate(names):
        k = net.domains[d]
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(out[i, k:]).all()
        torch.testing.assert_close(indexed[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(indexed[i, k:]).all()


def test_mixed_batch_does_each_images_work_once():
    """FLOPs of a mixed batch (names or an index tensor) equal a one-domain batch's: no domain's layers
    run on another domain's samples."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    idx = torch.tensor([list(net.domains).index(n) for n in NAMES])
    flops = {}
    with torch.no_grad():
        for key, domain in (("single", "c"), ("names", NAMES), ("indexed", idx)):
            with FlopCounterMode(display=False) as fc:
                net(x, domain=domain)
            flops[key] = fc.get_total_flops()
    # the heads differ in width (5/3/7 classes vs 7 for all): a few hundred FLOPs of several million
    assert abs(flops["names"] - flops["single"]) < 1e-3 * flops["single"]
    assert abs(flops["indexed"] - flops["single"]) < 1e-3 * flops["single"]


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
