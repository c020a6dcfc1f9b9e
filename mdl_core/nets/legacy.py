"""Artifacts written before trunks became modules (tensor layout 1) into today's names (layout 2).

Layout 1 keyed the ResNet-26 trunks by the same paths the module files use now (``stem.conv.weight``,
``s1.b0.dw1.weight``, ``head.*``), so `dw`, `bn`, `classifier-only` and `finetune` artifacts load
unchanged. Two things differ, and both translate exactly:
  * adapters were named by position (``s1.b0.pa1.weight``, ``s1.b0.sa1.conv.weight``/``.bn.*``); now
    they live under the conv they adapt (``s1.b0.conv1.adapter.weight``, ``...adapter.conv/bn.*``);
  * layout 1 shared the stem under `dw-sharing` and gave the stem no residual adapter; today both are
    per domain. The missing stem tensors are filled with what layout 1 computed: the trunk's own stem
    for `dw-sharing`, a zero adapter (identity) for the adapter methods.
Anything else missing or unexpected is refused by the network's strict load.
"""
from __future__ import annotations

import re

import torch

_ADAPTER = re.compile(r"^(s\d+\.b\d+)\.(pa|sa)(\d)\.(.+)$")
_FILLED = ("stem.",)  # the only tensors layout 1 may lack


def upgrade_domain_tensors(tensors: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``fresh``: a new domain's own tensors on the same trunk (copied from the trunk, zero adapters)."""
    out = {}
    for key, t in tensors.items():
        m = _ADAPTER.match(key)
        if m:
            block, kind, i, rest = m.groups()
            rest = "weight" if kind == "pa" else rest  # pa: the 1x1 itself; sa: conv.weight / bn.*
            key = f"{block}.conv{i}.adapter.{rest}"
        out[key] = t
    for key, t in fresh.items():
        if key not in out and key.startswith(_FILLED):
            out[key] = t
    return out
