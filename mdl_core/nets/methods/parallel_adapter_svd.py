"""`parallel-adapter-svd` (Rebuffi et al. 2018, §3.4, cross-domain adapter compression): the parallel
adapters of several domains factored through one shared basis.

Per dense kxk conv, domain t's 1x1 adapter A_t (C_out x C_in) becomes gamma_t @ beta: beta (K x C_in) is
the right factor of the SVD of the adapters of all compressed domains stacked [A_1; ...; A_D], shared by
them; gamma_t (C_out x K) is domain t's own. y = conv(x) + gamma_t(beta(x)), then the trunk's (per-domain)
norm, as in ``parallel-adapter``. Per domain: gamma (a parameter), beta (a *buffer*: stored with the
domain so a version loads exactly and hash-checked, never trained, not counted as the domain's own
parameters), every norm, the head. The factors are made by :func:`mdl.core.compression.compress_adapters`;
a domain added directly gets zero factors of rank ``ceil(C_in / 2)`` (its adapter starts at zero).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from .base import DenseAdapterMethod
from .parallel_adapter import ParallelAdapter


class LowRankAdapter(nn.Module):
    """A 1x1 conv through a rank-K bottleneck: x -> beta (K x C_in, shared) -> gamma (C_out x K)."""

    def __init__(self, cin: int, cout: int, rank: int):
        super().__init__()
        self.register_buffer("beta", torch.zeros(rank, cin, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(cout, rank, 1, 1))

    @property
    def rank(self) -> int:
        return self.gamma.shape[1]

    def weight(self) -> torch.Tensor:
        """The equivalent 1x1 adapter, C_out x C_in x 1 x 1."""
        return (self.gamma.flatten(1) @ self.beta.flatten(1))[:, :, None, None]

    def forward(self, x):
        return F.conv2d(F.conv2d(x, self.beta), self.gamma)


class SVDParallelAdapter(ParallelAdapter):
    """The shared conv (``base``, frozen) plus one low-rank 1x1 adapter per domain."""

    def add(self, name, device, dtype, **_):
        b = self.base
        self.domains[name] = LowRankAdapter(b.in_channels, b.out_channels, math.ceil(b.in_channels / 2)).to(
            device=device, dtype=dtype)

    def set_factors(self, name: str, beta: torch.Tensor, gamma: torch.Tensor) -> None:
        """Replace domain ``name``'s factors (any rank K): beta [K, C_in], gamma [C_out, K]."""
        b, old = self.base, self.domains[name]
        k = beta.shape[0]
        if tuple(beta.shape[:2]) != (k, b.in_channels) or tuple(gamma.shape[:2]) != (b.out_channels, k):
            raise ValueError(f"{self.path}: factors {tuple(beta.shape)} x {tuple(gamma.shape)} do not fit a "
                             f"{b.out_channels}x{b.in_channels} adapter")
        new = LowRankAdapter(b.in_channels, b.out_channels, k).to(device=old.gamma.device, dtype=old.gamma.dtype)
        with torch.no_grad():
            new.beta.copy_(beta.reshape(new.beta.shape))
            new.gamma.copy_(gamma.reshape(new.gamma.shape))
        new.gamma.requires_grad_(old.gamma.requires_grad)
        self.domains[name] = new

    def match_shapes(self, name: str, tensors: dict) -> None:
        """Before a strict load: take the rank the stored factors have."""
        beta, gamma = tensors.get("adapter.beta"), tensors.get("adapter.gamma")
        if beta is not None and gamma is not None and beta.ndim >= 2 and beta.shape[0] != self.domains[name].rank:
            self.set_factors(name, beta, gamma)

    def fuse(self, name: str) -> None:
        raise ValueError("parallel-adapter-svd adapters are not fused (their factors are what is shared)")


@register_method("parallel-adapter-svd")
class SVDParallelAdapterMethod(DenseAdapterMethod):
    adapter = SVDParallelAdapter
