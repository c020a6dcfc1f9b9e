"""`parallel-adapter` (Rebuffi et al. 2018): y = BN_t(conv3x3(x) + conv1x1_t(x)) at every block 3x3 conv.

Per domain: the 1x1 adapters (zero-initialised, so a fresh domain reproduces the trunk), all BN, head.
The stem conv gets no adapter (1x1 beside every *block* 3x3: 1/9 of the block conv parameters).
Deployment fusion (Rebuffi 2018 §3.1.2): W3x3 + pad(W1x1) is one 3x3 filter, see
``MultiDomainNet.fuse_adapters``.
"""
import torch.nn.functional as F

from ..registry import register_method
from ..trunks import TensorDef
from .base import Method, conv1x1, zeros


def adapter_key(u) -> str:
    return u.key("pa") + ".weight"


@register_method("parallel-adapter")
class ParallelAdapterMethod(Method):
    trunks = ("resnet26",)
    domain_roles = frozenset({"bn"})
    stackable = False
    fusable = True

    def adapter_tensors(self, spec) -> dict:
        return {adapter_key(u): (TensorDef("adapter", (u.cout, u.cin, 1, 1)), zeros)
                for u in spec.units if u.kind == "plain"}

    def conv3x3(self, net, x, u, ctx):
        if u.kind != "plain":
            return super().conv3x3(net, x, u, ctx)
        fused = net.fused_weight(ctx.domain, u.key("conv") + ".weight")
        if fused is not None:
            return F.conv2d(x, fused, stride=u.stride, padding=1)
        y = ctx.conv(x, u.key("conv") + ".weight", u.stride, 1)
        return y + conv1x1(x, ctx.tensor(adapter_key(u)), u.stride)
