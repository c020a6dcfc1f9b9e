"""Residual adapters: zero-initialised adapters reproduce the base network; fusion is exact."""
import pytest
import torch

from mdl.core import create_network


def trunk_with_stats(width=0.125):
    torch.manual_seed(0)
    ft = create_network("resnet26", method="finetune", domains={"src": 4}, width=width)
    with torch.no_grad():
        for k, t in ft.domain_tensors("src").items():
            if k.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif k.endswith(("running_mean", "bias")):
                t.normal_(0, 0.1)
    return ft.trunk_state_dict("src")


def build(method, trunk):
    net = create_network("resnet26", method=method, domains={}, width=0.125)
    net.load_trunk_state_dict(trunk)
    net.add_domain("d", 6)
    return net.eval()


@pytest.mark.parametrize("method", ["parallel-adapter", "series-adapter"])
def test_zero_adapter_reproduces_base(method):
    trunk = trunk_with_stats()
    base = build("bn", trunk)
    net = build(method, trunk)
    with torch.no_grad():
        for k in ("head.weight", "head.bias"):
            net.domain_tensors("d")[k].copy_(base.domain_tensors("d")[k])
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "d"), base(x, "d"), rtol=0, atol=0)


def test_fused_equals_unfused_and_unfuse_recovers():
    net = build("parallel-adapter", trunk_with_stats())
    with torch.no_grad():
        for k, t in net.domain_tensors("d").items():
            if ".adapter." in k:
                t.normal_(0, 0.05)
    before = net.domain_state_dict("d")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        unfused = net(x, "d")
        net.fuse_adapters("d")
        fused = net(x, "d")
        ref = unfused.abs().max().item()
        torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5 * ref)
        net.unfuse_adapters("d")
        again = net(x, "d")
    assert not net.fused
    after = net.domain_state_dict("d")
    for k in before:  # adapters recovered from the fused filters (one rounding of a subtraction)
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6)
    torch.testing.assert_close(again, unfused, rtol=1e-5, atol=1e-5 * ref)


def test_parallel_adapter_trains_on_the_batch_that_crashed_onednn():
    """A strided 1x1 conv's backward on channels_last input crashed the process in oneDNN (batch 51,
    8->16 channels, 28 px, stride 2); the adapter reads the strided taps with a stride-1 conv instead."""
    torch.manual_seed(0)
    net = create_network("resnet26", method="parallel-adapter", domains={"d": 43}, width=0.25)
    net.to(memory_format=torch.channels_last)
    params = net.train_domain("d")
    x = torch.randn(51, 3, 28, 28).contiguous(memory_format=torch.channels_last)
    torch.nn.functional.cross_entropy(net(x, "d"), torch.randint(0, 43, (51,))).backward()
    assert all(p.grad is not None for p in params)
