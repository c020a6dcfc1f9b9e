"""Joint multi-domain training (Bilen & Vedaldi 2017) at toy size: the round-robin sampler, the joint
loop (every domain's loss falls, shared weights train, other domains' parts are left alone), and the
instance-norm trunk whose only per-domain parameters are the head."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mdl.core import create_network
from mdl.core.joint import RoundRobin, fit_joint, joint_parameters, shared_parameters
from mdl.core.nets.trunks.instance_norm import from_bn_state
from mdl.core.recipes import Recipe
from mdl.core.training import DeviceSetup, accuracy

ARCH, WIDTH = "resnet26", 0.125


def test_round_robin_visits_domains_in_order_and_restarts_short_ones():
    loaders = {"a": ["a0", "a1", "a2"], "b": ["b0"], "c": ["c0", "c1"]}
    rr = RoundRobin(loaders)
    got = list(rr)
    assert len(rr) == len(got) == 9
    assert [d for d, _ in got] == ["a", "b", "c"] * 3
    assert [b for _, b in got] == ["a0", "b0", "c0", "a1", "b0", "c1", "a2", "b0", "c0"]
    assert [d for d, _ in RoundRobin(loaders, rounds=1)] == ["a", "b", "c"]


def test_round_robin_refuses_empty():
    with pytest.raises(ValueError, match="no training batches"):
        RoundRobin({"a": [1], "b": []})
    with pytest.raises(ValueError, match="at least one"):
        RoundRobin({})


def _toy(seed: int, classes: int, n: int = 64, size: int = 16):
    """Images whose class decides an oriented pattern (horizontal, vertical, checkerboard, diagonal
    stripes) plus noise: learnable in a few steps, also after instance normalisation (which removes any
    per-image colour or contrast)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    shapes = [(i // 2) % 2, (j // 2) % 2, (i // 2 + j // 2) % 2, ((i + j) // 2) % 2]
    patterns = torch.stack([2.0 * s.float()[None].expand(3, size, size) - 1 for s in shapes[:classes]])
    x = patterns[y] + 0.5 * torch.randn(n, 3, size, size, generator=g)
    return TensorDataset(x, y)


def _loader(ds, shuffle, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=16, shuffle=shuffle, generator=g if shuffle else None)


def _trunk():
    torch.manual_seed(0)
    return create_network(ARCH, "classifier-only", width=WIDTH).trunk_state_dict()


def test_joint_training_lowers_every_domains_loss():
    """Domain-specific BN + heads with the shared trunk trained jointly. (The instance-norm network learns
    far slower at this size: its pooled features start nearly constant across images, so it is checked
    for structure here and end to end through the command in test_methods_cli.py.)"""
    net = create_network(ARCH, "bn", width=WIDTH)
    net.load_trunk_state_dict(_trunk())
    domains = {"a": 3, "b": 4}
    torch.manual_seed(0)
    for d, k in domains.items():
        net.add_domain(d, k)
    train = {d: _loader(_toy(i, k), True, i) for i, (d, k) in enumerate(domains.items())}
    val = {d: _loader(_toy(i + 10, k, n=48), False) for i, (d, k) in enumerate(domains.items())}
    shared_before = [p.detach().clone() for p in shared_parameters(net)]
    params = joint_parameters(net, list(domains))
    dev = DeviceSetup(torch.device("cpu"), amp=False, channels_last=False)
    recipe = Recipe(epochs=3, lr=0.05, weight_decay=0.0, batch_size=16, warmup=False)
    # the real snapshot/restore (the whole network), so the end state is the best epoch's (test_best_epoch.py)
    result = fit_joint(net, params, train, val, recipe, dev, snapshot=net.state_dict, restore=net.load_state_dict)
    losses = {d: [h["domains"][d]["train_loss"] for h in result.history] for d in domains}
    for d in domains:
        assert losses[d][-1] < 0.8 * losses[d][0], (d, losses[d])
    assert all(not torch.equal(b, p) for b, p in zip(shared_before, shared_parameters(net)))
    assert set(result.best_accuracy) == set(domains)
    means = [h["val_mean_accuracy"] for h in result.history]
    assert result.best_mean_accuracy == max(means) == means[result.best_epoch - 1]
    # the network it leaves measures what the best epoch measured
    assert {d: accuracy(net, val[d], dev, domain=d)[0] for d in domains} == result.best_accuracy


def test_a_step_of_one_domain_leaves_the_others_parts_alone():
    net = create_network(ARCH, "bn", width=WIDTH)
    net.load_trunk_state_dict(_trunk())
    net.add_domain("a", 3)
    net.add_domain("b", 4)
    train = {"a": _loader(_toy(0, 3, n=32), False), "b": _loader(_toy(1, 4, n=32), False)}
    params = joint_parameters(net, ["a", "b"])
    b_before = {k: v.clone() for k, v in net.domain_state_dict("b").items()}
    shared_before = [p.detach().clone() for p in shared_parameters(net)]
    dev = DeviceSetup(torch.device("cpu"), amp=False, channels_last=False)
    recipe = Recipe(epochs=1, lr=0.05, batch_size=32, warmup=False)
    # one round of domain "a" only: b's norms (and statistics) and head must not move
    fit_joint(net, params, {"a": train["a"]}, {"a": train["a"]}, recipe, dev, snapshot=dict, restore=lambda t: None)
    assert all(torch.equal(v, net.domain_state_dict("b")[k]) for k, v in b_before.items())
    assert any(not torch.equal(b, p) for b, p in zip(shared_before, shared_parameters(net)))


def test_instance_norm_trunk_has_only_heads_per_domain():
    net = create_network("resnet26_in", "classifier-only", width=WIDTH, domains={"a": 3, "b": 7})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    counts = net.parameter_counts()["domains"]
    feat = net.head.domains["a"].in_features
    assert counts == {"a": feat * 3 + 3, "b": feat * 7 + 7}
    for d in ("a", "b"):
        assert set(net.domain_state_dict(d)) == {"head.weight", "head.bias"}
    # a BN trunk's tensors load strictly once the running statistics are dropped
    net.load_trunk_state_dict(from_bn_state(_trunk()))
    with pytest.raises(ValueError, match="unexpected keys"):
        net.load_trunk_state_dict(_trunk())
    # each image is normalised by its own statistics: a sample's logits do not depend on the batch
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(net(x, "a")[:1], net(x[:1], "a"), atol=1e-5)
    net.train()
    assert torch.allclose(net(x, "a")[:1], net(x[:1], "a"), atol=1e-5)


def test_joint_training_with_statistics_kept_leaves_running_statistics_bit_equal():
    """The transfer recipe's BN policy in joint training: each domain's norms normalise with the statistics
    they were copied with (affines still train); with batch statistics the same run moves them."""
    moved = {}
    for policy in ("keep", "batch"):
        net = create_network(ARCH, "bn", width=WIDTH)
        net.load_trunk_state_dict(_trunk())
        torch.manual_seed(0)
        net.add_domain("a", 3)
        net.add_domain("b", 4)
        stats = lambda: {k: v.clone() for d in "ab" for k, v in net.domain_state_dict(d).items()  # noqa: E731
                         if k.endswith(("running_mean", "running_var"))}
        affine = lambda: {k: v.clone() for d in "ab" for k, v in net.domain_state_dict(d).items()  # noqa: E731
                          if k.endswith("weight")}
        before, affine_before = stats(), affine()
        train = {d: _loader(_toy(i, k, n=32), True, i) for i, (d, k) in enumerate({"a": 3, "b": 4}.items())}
        recipe = Recipe(epochs=1, lr=0.05, batch_size=16, warmup=False, bn_stats=policy)
        fit_joint(net, joint_parameters(net, ["a", "b"]), train, train, recipe,
                  DeviceSetup(torch.device("cpu"), amp=False, channels_last=False), snapshot=dict, restore=lambda t: None)
        after = stats()
        moved[policy] = any(not torch.equal(before[k], after[k]) for k in before)
        assert any(not torch.equal(affine_before[k], v) for k, v in affine().items())
    assert moved == {"keep": False, "batch": True}
