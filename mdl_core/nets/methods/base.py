"""Method = the per-domain parameter partition of a trunk, plus any adapter tensors and how they run.

A method declares:
  * ``trunks``        the archs it applies to (None: any registered trunk);
  * ``domain_roles``  which trunk tensor roles (see :mod:`mdl_core.nets.trunks`) live in each
                      domain's own container; every other trunk tensor is shared and frozen;
  * ``adapter_tensors(spec)`` extra per-domain tensors (key -> (TensorDef, init));
  * ``conv3x3(net, x, unit, ctx)`` how a stem/plain 3x3 conv unit runs (adapters override it);
  * ``stackable``     whether mixed batches may use the stacked single-pass path (methods that
                      only re-partition trunk tensors can; adapter methods group per domain).
The head (``head.weight``, ``head.bias``) is always per domain.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ALL_ROLES = frozenset({"stem", "dw", "pw", "pw_last", "conv", "bn"})


class Method:
    name: str = ""
    trunks: tuple | None = None
    domain_roles: frozenset = frozenset()
    stackable: bool = True
    fusable: bool = False

    def check_trunk(self, arch: str) -> None:
        if self.trunks is not None and arch not in self.trunks:
            raise ValueError(f"method {self.name!r} does not apply to arch {arch!r}; "
                             f"valid archs: {', '.join(self.trunks)}")

    def adapter_tensors(self, spec) -> dict:
        return {}

    def conv3x3(self, net, x: torch.Tensor, u, ctx) -> torch.Tensor:
        return ctx.conv(x, u.key("conv") + ".weight", u.stride, 1)


def zeros(shape):
    return torch.zeros(shape)


def ones(shape):
    return torch.ones(shape)


def conv1x1(x, w, stride=1):
    return F.conv2d(x, w, stride=stride)
