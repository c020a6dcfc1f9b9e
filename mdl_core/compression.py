"""Cross-domain adapter compression (Rebuffi et al. 2018, "Efficient parametrization of multi-domain
deep neural networks", §3.4).

Per adapted layer, the 1x1 parallel adapters of D domains (each C_out x C_in) are stacked into
A = [A_1; ...; A_D] (D*C_out x C_in) and factored by SVD, A = U S V^T. Keeping the top K singular
values, A_t ~ gamma_t @ beta with beta = V_K^T (K x C_in, shared by the D domains) and
gamma_t = (U_K S_K) rows of domain t (C_out x K, its own). The squared Frobenius error summed over the
domains is exactly the energy of the discarded singular values, sum_{i>K} s_i^2 (Eckart-Young); at
K = rank(A) (at most C_in) the adapters are reproduced exactly.

Parameter accounting per layer (square C x C adapters, K = C/2): uncompressed D*C^2; compressed
D*C*K (gammas) + K*C (beta) = (D + 1) * C^2 / 2. Per domain its own gamma is K/C = 1/2 of its adapter;
counting one whole beta with every domain (as if it were not shared), gamma + beta = 2K/C = 1 of it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

from mdl.core.nets.methods.parallel_adapter import ParallelAdapter, ParallelAdapterMethod
from mdl.core.nets.methods.parallel_adapter_svd import SVDParallelAdapter

# What this compresses, and into what: the methods say (Method.compresses_to)
SOURCE_METHOD = ParallelAdapterMethod.name
SVD_METHOD = ParallelAdapterMethod.compresses_to


def rank_for(c_in: int, c_out: int, num_domains: int, ratio: float) -> int:
    """K = round(ratio * C_in), at least 1 and at most the stacked matrix's rank bound min(D*C_out, C_in)."""
    if not (0 < ratio <= 1) or not math.isfinite(ratio):
        raise ValueError(f"--rank-ratio must be in (0, 1], got {ratio}")
    return max(1, min(round(ratio * c_in), c_in, num_domains * c_out))


@dataclass
class LayerFactors:
    beta: torch.Tensor            # K x C_in, shared
    gammas: list[torch.Tensor]    # per domain, C_out x K
    singular_values: torch.Tensor  # all of them, descending
    discarded_energy: float       # sum of the squared discarded singular values


def factor_adapters(adapters: list[torch.Tensor], rank: int) -> LayerFactors:
    """SVD of the stacked adapters [A_1; ...; A_D] (each C_out x C_in, or C_out x C_in x 1 x 1), top ``rank``.
    Computed in float64; factors returned in the adapters' dtype."""
    mats = [a.detach().reshape(a.shape[0], -1).double() for a in adapters]
    if len({m.shape for m in mats}) != 1:
        raise ValueError(f"adapters of one layer must share a shape, got {sorted({tuple(m.shape) for m in mats})}")
    stacked = torch.cat(mats, 0)
    u, s, vh = torch.linalg.svd(stacked, full_matrices=False)
    k = int(rank)
    if not 1 <= k <= s.numel():
        raise ValueError(f"rank {k} outside 1..{s.numel()}")
    dtype = adapters[0].dtype
    gammas = (u[:, :k] * s[:k]).split(mats[0].shape[0], 0)
    return LayerFactors(vh[:k].to(dtype).contiguous(), [g.to(dtype).contiguous() for g in gammas], s,
                        float((s[k:] ** 2).sum()))


@dataclass
class CompressionReport:
    group: str                           # content id of the shared factors (sha256 of every beta, first 16 hex)
    rank_ratio: float
    ranks: dict[str, int]                # layer path -> K
    beta_params: int                     # the shared factors, counted once
    gamma_params: dict[str, int]         # domain -> its own factors
    adapter_params: int                  # one domain's uncompressed adapters (every domain has the same shapes)
    discarded_energy: dict[str, float]   # layer path -> sum of discarded s_i^2
    relative_error: dict[str, float] = field(default_factory=dict)  # layer -> ||A - A_K||_F / ||A||_F

    def to_dict(self) -> dict:
        d = len(self.gamma_params)
        total = self.beta_params + sum(self.gamma_params.values())
        return {"group": self.group, "rank_ratio": self.rank_ratio, "ranks": self.ranks,
                "beta_params": self.beta_params, "gamma_params": self.gamma_params,
                "adapter_params_per_domain": self.adapter_params,
                "own_fraction": self.gamma_params[next(iter(self.gamma_params))] / self.adapter_params,
                "own_plus_beta_fraction": (self.gamma_params[next(iter(self.gamma_params))] + self.beta_params)
                / self.adapter_params,
                "group_fraction": total / (d * self.adapter_params),
                "discarded_energy": self.discarded_energy, "relative_error": self.relative_error}


def beta_digest(betas: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for path in sorted(betas):
        t = betas[path].detach().cpu().reshape(betas[path].shape[0], -1).contiguous()  # K x C_in, however held
        h.update(path.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def compress_adapters(src, dst, domains: list[str], rank_ratio: float = 0.5) -> CompressionReport:
    """Factor ``domains``' parallel adapters in ``src`` (a ``parallel-adapter`` network) into ``dst`` (a
    ``parallel-adapter-svd`` network on the same trunk, already holding the trunk's tensors): each domain
    is (re)created in ``dst`` with its norms and head copied from ``src`` and its adapters replaced by
    gamma_t @ beta. Returns the accounting."""
    if src.method != SOURCE_METHOD or dst.method != SVD_METHOD:
        raise ValueError(f"compress from a {SOURCE_METHOD!r} network into a {SVD_METHOD!r} one "
                         f"(got {src.method!r} -> {dst.method!r})")
    if len(domains) < 2 or len(set(domains)) != len(domains):
        raise ValueError(f"cross-domain compression needs at least 2 distinct domains, got {domains}")
    for d in domains:
        src._check_domain(d)
    layers = [p for p, w in src.wrappers.items() if isinstance(w, ParallelAdapter)]
    if sorted(layers) != sorted(p for p, w in dst.wrappers.items() if isinstance(w, SVDParallelAdapter)):
        raise ValueError("source and target networks adapt different layers (different trunks?)")
    for d in domains:
        if d in dst.domains:
            dst.remove_domain(d)
        keep = {k: v for k, v in src.domain_state_dict(d).items()
                if not any(k == f"{p}.adapter.weight" for p in layers)}
        dst.add_domain(d, src.domains[d])
        own = dst.domain_state_dict(d)
        own.update(keep)
        dst.load_domain_state_dict(d, own)
    ranks, betas, energy, rel, gamma_params, adapter_params = {}, {}, {}, {}, dict.fromkeys(domains, 0), 0
    for p in layers:
        mats = [src.wrappers[p].domains[d].weight for d in domains]
        c_out, c_in = mats[0].shape[:2]
        k = rank_for(c_in, c_out, len(domains), rank_ratio)
        f = factor_adapters(mats, k)
        for d, g in zip(domains, f.gammas):
            dst.wrappers[p].set_factors(d, f.beta, g)
            gamma_params[d] += g.numel()
        ranks[p], betas[p], energy[p] = k, f.beta, f.discarded_energy
        total = float((f.singular_values ** 2).sum())
        rel[p] = math.sqrt(f.discarded_energy / total) if total > 0 else 0.0
        adapter_params += c_out * c_in
    return CompressionReport(beta_digest(betas), float(rank_ratio), ranks, sum(b.numel() for b in betas.values()),
                             gamma_params, adapter_params, energy, rel)


def shared_factors(net, domain: str) -> dict[str, torch.Tensor]:
    """A compressed domain's shared factors (beta) by layer path, live."""
    return {p: w.domains[domain].beta for p, w in net.wrappers.items() if isinstance(w, SVDParallelAdapter)}
