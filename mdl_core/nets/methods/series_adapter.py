"""`series-adapter` (Rebuffi et al. 2017): after every block 3x3 conv, y <- y + conv1x1_t(BN_t(y)),
then the block's BN. Per domain: adapter convs (zero-initialised: a fresh domain reproduces the
trunk), adapter BNs, all BN, head."""
from ..registry import register_method
from ..trunks import BN_TENSORS, TensorDef
from .base import Method, conv1x1, ones, zeros

_BN_INIT = {"weight": ones, "bias": zeros, "running_mean": zeros, "running_var": ones}


@register_method("series-adapter")
class SeriesAdapterMethod(Method):
    trunks = ("resnet26",)
    domain_roles = frozenset({"bn"})
    stackable = False

    def adapter_tensors(self, spec) -> dict:
        out = {}
        for u in spec.units:
            if u.kind != "plain":
                continue
            out[u.key("sa") + ".conv.weight"] = (TensorDef("adapter", (u.cout, u.cout, 1, 1)), zeros)
            for n in BN_TENSORS:
                out[u.key("sa") + f".bn.{n}"] = (
                    TensorDef("adapter", (u.cout,), is_param=n in ("weight", "bias")), _BN_INIT[n])
        return out

    def conv3x3(self, net, x, u, ctx):
        y = super().conv3x3(net, x, u, ctx)
        if u.kind != "plain":
            return y
        a = ctx.bn(y, u.key("sa") + ".bn")
        return y + conv1x1(a, ctx.tensor(u.key("sa") + ".conv.weight"))
