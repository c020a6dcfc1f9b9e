"""`parallel-adapter` (Rebuffi et al. 2018): beside every dense kxk conv (k > 1) a per-domain 1x1
conv, y = conv(x) + conv1x1_t(x), followed by the trunk's (per-domain) norm; plus every norm and the
head. Adapters start at zero, so a new domain starts as the trunk (the reference code initialises them
randomly; zero keeps a fresh domain's accuracy where the trunk's is).

Deployment fusion (Rebuffi 2018 §3.1.2): W_kxk + centre-padded W_1x1 is one kxk filter
(``MultiDomainNet.fuse_adapters``); exact for odd k with symmetric padding.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..registry import register_method
from ..wrappers import PerDomain
from .base import DenseAdapterMethod


class ParallelAdapter(PerDomain):
    """The shared conv (``base``, frozen) plus one 1x1 adapter per domain (``domains``)."""

    copies_template = False

    def __init__(self, template: nn.Conv2d, router, path: str):
        super().__init__(template, router, path)
        self.base = template  # registered: the shared conv stays in the module tree
        self.fused: dict[str, torch.Tensor] = {}

    def add(self, name, device, dtype, **_):
        b = self.base
        # stride 1 on a subsampled input (see _taps): the same map as a strided 1x1 conv
        adapter = nn.Conv2d(b.in_channels, b.out_channels, 1, bias=False)
        nn.init.zeros_(adapter.weight)
        self.domains[name] = adapter.to(device=device, dtype=dtype)

    def remove(self, name):
        super().remove(name)
        self.fused.pop(name, None)

    def domain_tensors(self, name):
        return {f"adapter.{k}": v for k, v in super().domain_tensors(name).items()}

    def fuse(self, name: str) -> None:
        a = self.domains[name].weight
        k = self.base.weight.shape[-1]
        with torch.no_grad():
            self.fused[name] = self.base.weight + F.pad(a, (k // 2, k // 2, k // 2, k // 2))

    def unfuse(self, name: str) -> None:
        """Recover the adapter from the fused filter (centre tap minus the shared centre tap)."""
        k = self.base.weight.shape[-1]
        with torch.no_grad():
            delta = self.fused.pop(name) - self.base.weight
            self.domains[name].weight.copy_(delta[:, :, k // 2:k // 2 + 1, k // 2:k // 2 + 1])

    def forward(self, x):
        r, b = self.router, self.base
        if r.domain is not None and r.domain in self.fused:
            xp, padding = layers.conv_geometry(b, x)
            return F.conv2d(xp, self.fused[r.domain], b.bias, b.stride, padding, b.dilation, b.groups)
        y = b(x)
        taps = self._taps(x)
        if r.domain is not None:
            return y + self.domains[r.domain](taps)
        return y + self.grouped(taps)

    def _taps(self, x):
        """The input positions a strided 1x1 conv reads. Slicing and a stride-1 conv instead of a strided
        1x1 conv: oneDNN's backward of a strided 1x1 conv on channels_last input crashes the process
        (double free / segfault) for some batch sizes (seen: 8->16 channels, 28 px, stride 2, batch 51)."""
        sh, sw = self.base.stride
        return x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]


@register_method("parallel-adapter")
class ParallelAdapterMethod(DenseAdapterMethod):
    fusable = True
    compresses_to = "parallel-adapter-svd"  # Rebuffi et al. 2018 §3.4 (mdl.core.compression)
    adapter = ParallelAdapter
