"""Which per-domain depthwise conv feeds a per-domain batch norm and nothing else (read off the trunk's graph).

In a mixed eval batch a per-domain depthwise conv produces its output in parts (one per domain slice, or
one fold) that must be joined into one batch tensor, a full copy of one of the largest activations, and the
norm that follows then reads that tensor once more to apply each sample's affine. When the norm is the
conv's ONLY consumer, the depthwise wrapper can apply the norm's affine to each part itself, writing
straight into the joined output: one pass instead of two (Lite0, 10 domains, batch 100: the joins were
8.5 ms of a 100 ms forward). That condition is a fact about the trunk's dataflow, so it is read off an
``torch.fx`` trace of the trunk with every wrapper and conv as a leaf; a trunk fx cannot trace (Python
control flow on tensors) gets no fusion, never a wrong one. The trace runs once per network, at its first
mixed eval forward (10-20 ms for the timm families).
"""
from __future__ import annotations

import torch.fx as fx
from torch import nn


class _Tracer(fx.Tracer):
    """Wrappers (their per-domain internals hold Python dispatch on the router) and convs (timm's
    ``Conv2dSame`` pads with Python arithmetic on shapes) stay single nodes."""

    def __init__(self, leaves: tuple[type, ...]):
        super().__init__()
        self._leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaves + (nn.Conv2d,)) or super().is_leaf_module(m, qualname)


def trace_trunk(trunk: nn.Module, leaves: tuple[type, ...]) -> fx.Graph | None:
    """The trunk's fx graph with ``leaves`` and every conv as single nodes; None when it cannot be traced
    (Python control flow on tensors): then no layout or fusion is inferred from it."""
    try:
        return _Tracer(leaves).trace(trunk)
    except Exception:  # noqa: BLE001 - any trace failure means: nothing inferred
        return None


def sole_norm_consumers(trunk: nn.Module, producers: tuple[type, ...], consumers: tuple[type, ...],
                        leaves: tuple[type, ...]) -> dict[str, str]:
    """{producer module path: consumer module path} for every module of a ``producers`` type whose output
    goes to one module of a ``consumers`` type and to nothing else; {} when the trunk cannot be traced."""
    graph = trace_trunk(trunk, leaves)
    if graph is None:
        return {}
    modules = dict(trunk.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), producers):
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(modules.get(users[0].target), consumers) \
                and users[0].args[:1] == (node,) and len(users[0].args) == 1 and not users[0].kwargs:
            pairs[node.target] = users[0].target
    return pairs
