"""Freezing: after training steps on one domain, only that domain's tensors changed (bit for bit)."""
import pytest
import torch
import torch.nn.functional as F

from mdl.core import create_network

CASES = [("resnet26_dw", m) for m in ("dw", "dw-sharing", "classifier-only", "finetune")] + \
        [("resnet26", m) for m in ("bn", "parallel-adapter", "series-adapter", "classifier-only")]


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("arch,method", CASES)
def test_training_step_touches_only_own_domain(arch, method):
    torch.manual_seed(0)
    net = create_network(arch, method=method, domains={"a": 5, "b": 3}, width=0.125)
    before = snapshot(net)
    params = net.train_domain("a")
    assert {id(p) for p in params} == {id(p) for p in net.parameters() if p.requires_grad}
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(x, domain="a"), y).backward()
        opt.step()
    after = snapshot(net)
    own_ids = {id(t) for t in net.domain_tensors("a").values()}
    own = {k for k, v in net.state_dict(keep_vars=True).items() if id(v) in own_ids}
    assert len(own) == len(own_ids)
    for k in before:  # (BN step counters are bookkeeping; the statistics themselves are checked)
        if k not in own and not k.endswith("num_batches_tracked"):
            assert torch.equal(before[k], after[k]), f"{k} changed"
    changed = {k for k in own if not torch.equal(before[k], after[k])}
    own_params = {k for k, v in net.state_dict(keep_vars=True).items() if id(v) in {id(p) for p in params}}
    assert own_params <= changed  # every own parameter moved (adapters and the head included)
    assert any(k.endswith("head.domains.a.weight") for k in changed)
    if method != "classifier-only":  # own BN statistics updated in train mode
        assert any(k.endswith("running_mean") for k in changed)


def test_classifier_only_bn_stats_frozen_in_train_mode():
    torch.manual_seed(0)
    net = create_network("resnet26", method="classifier-only", domains={"a": 4}, width=0.125)
    before = net.shared_state_dict()
    net.train()
    net(torch.randn(4, 3, 16, 16), domain="a")
    after = net.shared_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pretrain_then_add_domain_flow():
    torch.manual_seed(0)
    src = create_network("resnet26_dw", method="finetune", domains={"src": 6}, width=0.125)
    opt = torch.optim.SGD(src.train_domain("src"), lr=0.1)
    F.cross_entropy(src(torch.randn(4, 3, 16, 16), "src"), torch.randint(0, 6, (4,))).backward()
    opt.step()
    trunk = src.trunk_state_dict("src")
    net = create_network("resnet26_dw", method="dw", domains={}, width=0.125)
    net.load_trunk_state_dict(trunk)
    net.add_domain("src", 6)
    with torch.no_grad():
        for k in ("head.weight", "head.bias"):
            net.domain_tensors("src")[k].copy_(src.domain_tensors("src")[k])
    net.add_domain("svhn", 10)
    src.eval(), net.eval()
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(net(x, "src"), src(x, "src"))
    # the new domain starts from the trunk: same trunk view as the source
    a, b = net.trunk_state_dict("svhn"), trunk
    assert all(torch.equal(a[k], b[k]) for k in b)
    with pytest.raises(ValueError, match="already exists"):
        net.add_domain("svhn", 10)
    net.remove_domain("svhn")
    assert net.domains == {"src": 6}
