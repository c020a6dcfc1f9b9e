"""`series-adapter` (Rebuffi et al. 2017): after every dense kxk conv (k > 1),
y <- y + conv1x1_t(BN_t(y)), then the trunk's (per-domain) norm. Per domain: the adapter convs
(zero-initialised: a new domain starts as the trunk) and their BNs, every norm, the head."""
from torch import nn

from ..registry import register_method
from ..wrappers import PerDomain
from .base import DenseAdapterMethod


class SeriesBranch(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, y):
        return self.conv(self.bn(y))


class SeriesAdapter(PerDomain):
    """The shared conv (``base``, frozen) followed by one residual 1x1 branch per domain."""

    copies_template = False

    def __init__(self, template: nn.Conv2d, router, path: str):
        super().__init__(template, router, path)
        self.base = template

    def add(self, name, device, dtype, **_):
        self.domains[name] = SeriesBranch(self.base.out_channels).to(device=device, dtype=dtype)

    def domain_tensors(self, name):
        return {f"adapter.{k}": v for k, v in super().domain_tensors(name).items()}

    def forward(self, x):
        y = self.base(x)
        r = self.router
        if r.domain is not None:
            return y + self.domains[r.domain](y)
        return y + self.grouped(y)


@register_method("series-adapter")
class SeriesAdapterMethod(DenseAdapterMethod):
    adapter = SeriesAdapter
