"""Cross-domain adapter compression (Rebuffi et al. 2018 §3.4) at toy size: the SVD factors, the
parallel-adapter-svd network, exactness at full rank, the Eckart-Young error below it, the accounting."""
from __future__ import annotations

import math

import pytest
import torch

from mdl.core import create_network
from mdl.core.compression import compress_adapters, factor_adapters, rank_for, shared_factors
from mdl.core.nets.methods.parallel_adapter import ParallelAdapter

ARCH, WIDTH = "resnet26", 0.125
DOMAINS = {"a": 3, "b": 4, "c": 5}


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    return create_network(ARCH, "classifier-only", width=WIDTH).trunk_state_dict()


def _source(trunk):
    """A parallel-adapter network with three domains whose adapters, norms and heads are random."""
    g = torch.Generator().manual_seed(1)
    src = create_network(ARCH, "parallel-adapter", width=WIDTH)
    src.load_trunk_state_dict(trunk)
    for d, k in DOMAINS.items():
        src.add_domain(d, k)
        with torch.no_grad():
            for key, t in src.domain_tensors(d).items():
                if key.endswith("adapter.weight") or key.startswith("head."):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                elif key.endswith((".bias", "running_mean")):
                    t.add_(torch.randn(t.shape, generator=g) * 0.1)
    return src.eval()


def _target(trunk):
    dst = create_network(ARCH, "parallel-adapter-svd", width=WIDTH)
    dst.load_trunk_state_dict(trunk)
    return dst


def test_full_rank_reproduces_every_adapter_and_logits(trunk):
    src, dst = _source(trunk), _target(trunk)
    report = compress_adapters(src, dst, list(DOMAINS), rank_ratio=1.0)
    dst.eval()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for d in DOMAINS:
        for p, w in src.wrappers.items():
            if isinstance(w, ParallelAdapter):
                assert torch.allclose(dst.wrappers[p].domains[d].weight(), w.domains[d].weight, atol=1e-5)
        assert torch.allclose(dst(x, d), src(x, d), atol=1e-4)
    assert all(e < 1e-8 for e in report.discarded_energy.values())
    # a mixed batch in one pass equals the per-domain forwards
    names = ["a", "b", "c", "a", "c", "b"]
    mixed = dst(x, names)
    for i, d in enumerate(names):
        assert torch.allclose(mixed[i, :DOMAINS[d]], dst(x[i:i + 1], d)[0], atol=1e-4)


def test_truncation_error_is_the_discarded_singular_energy():
    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(16, 12, 1, 1, generator=g) for _ in range(3)]
    s = torch.linalg.svdvals(torch.cat([m.flatten(1) for m in mats]).double())
    for k in (1, 4, 6, 11):
        f = factor_adapters(mats, k)
        err = sum(float(((m.flatten(1).double() - gm.double() @ f.beta.double()) ** 2).sum())
                  for m, gm in zip(mats, f.gammas))
        assert math.isclose(err, float((s[k:] ** 2).sum()), rel_tol=1e-6)
        assert math.isclose(f.discarded_energy, err, rel_tol=1e-6)
        assert f.beta.shape == (k, 12) and all(gm.shape == (16, k) for gm in f.gammas)
    # at the stacked matrix's rank the factors are exact
    f = factor_adapters(mats, 12)
    assert all(torch.allclose(gm @ f.beta, m.flatten(1), atol=1e-5) for m, gm in zip(mats, f.gammas))


def test_half_rank_network_error_matches_and_accounting(trunk):
    src, dst = _source(trunk), _target(trunk)
    report = compress_adapters(src, dst, list(DOMAINS), rank_ratio=0.5)
    layers = [p for p, w in src.wrappers.items() if isinstance(w, ParallelAdapter)]
    for p in layers:  # per layer: summed squared error over domains == discarded energy
        with torch.no_grad():
            err = sum(float(((dst.wrappers[p].domains[d].weight() - src.wrappers[p].domains[d].weight) ** 2).sum())
                      for d in DOMAINS)
        assert math.isclose(err, report.discarded_energy[p], rel_tol=1e-4, abs_tol=1e-9)
        c_out, c_in = src.wrappers[p].base.out_channels, src.wrappers[p].base.in_channels
        assert report.ranks[p] == max(1, round(c_in / 2))
        assert dst.wrappers[p].domains["a"].gamma.shape[:2] == (c_out, report.ranks[p])
    adapters = sum(src.wrappers[p].base.out_channels * src.wrappers[p].base.in_channels for p in layers)
    gammas = sum(src.wrappers[p].base.out_channels * report.ranks[p] for p in layers)
    betas = sum(report.ranks[p] * src.wrappers[p].base.in_channels for p in layers)
    assert report.adapter_params == adapters and report.beta_params == betas
    assert report.gamma_params == dict.fromkeys(DOMAINS, gammas)
    # a domain's own parameters: gamma replaces its adapters; beta (a buffer) is not its own
    src_own, dst_own = src.parameter_counts()["domains"], dst.parameter_counts()["domains"]
    for d in DOMAINS:
        assert dst_own[d] == src_own[d] - adapters + gammas
    summary = report.to_dict()
    assert 0.45 < summary["own_fraction"] < 0.55  # K/C for the square layers, K/C_in for the rest
    assert math.isclose(summary["group_fraction"], (3 * gammas + betas) / (3 * adapters))
    # every domain holds the same shared factors
    digests = {tuple(t.sum().item() for t in shared_factors(dst, d).values()) for d in DOMAINS}
    assert len(digests) == 1


def test_state_dict_round_trip_keeps_rank_and_logits(trunk):
    src, dst = _source(trunk), _target(trunk)
    compress_adapters(src, dst, ["a", "b"], rank_ratio=0.25)
    dst.eval()
    fresh = _target(trunk).eval()
    state = dst.domain_state_dict("a")
    assert any(k.endswith("adapter.beta") for k in state) and any(k.endswith("adapter.gamma") for k in state)
    fresh.load_domain_state_dict("a", state)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert torch.equal(fresh(x, "a"), dst(x, "a"))


def test_only_gamma_norms_and_head_train(trunk):
    src, dst = _source(trunk), _target(trunk)
    compress_adapters(src, dst, ["a", "b"], rank_ratio=0.5)
    params = {id(p) for p in dst.set_trainable("a")}
    for w in dst.wrappers.values():
        m = w.domains["a"]
        if hasattr(m, "beta"):
            assert not m.beta.requires_grad and id(m.gamma) in params
    before = {p: b.clone() for p, b in shared_factors(dst, "a").items()}
    opt = torch.optim.SGD(dst.trainable_parameters("a"), lr=0.1)
    dst.train()
    loss = dst(torch.randn(4, 3, 32, 32), "a").logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert all(torch.equal(before[p], b) for p, b in shared_factors(dst, "a").items())


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, float("nan")])
def test_bad_rank_ratio(ratio):
    with pytest.raises(ValueError, match="rank-ratio"):
        rank_for(16, 16, 2, ratio)


def test_refuses_one_domain_and_wrong_methods(trunk):
    src, dst = _source(trunk), _target(trunk)
    with pytest.raises(ValueError, match="at least 2"):
        compress_adapters(src, dst, ["a"])
    with pytest.raises(ValueError, match="at least 2"):
        compress_adapters(src, dst, ["a", "a"])
    with pytest.raises(KeyError, match="unknown domain"):
        compress_adapters(src, dst, ["a", "zzz"])
    bn = create_network(ARCH, "bn", width=WIDTH)
    with pytest.raises(ValueError, match="parallel-adapter"):
        compress_adapters(bn, dst, ["a", "b"])
