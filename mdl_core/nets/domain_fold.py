"""Domain-folded mixed batches: the batch's domains side by side in channels, for the whole trunk.

A mixed eval batch sorted by domain, with n images in its largest domain slice, can run the trunk as ONE
batch of n images with D*C channels ([n, D*C, H, W] channels_last; channel d*C + c is the d-th present
domain's channel c, image i of slot d is that domain's i-th sample; shorter slices are zero-padded):

* a shared 1x1 conv is one matmul over [n*H*W*D, C]: the same work as over the unfolded batch;
* a per-domain depthwise conv is one grouped conv (groups D*C) with the domains' stacked filters as they
  are: no per-sample filter gather, and no fold copy in and join out at every layer (the per-layer
  ``folded`` mode of wrappers.py, which this carries over the whole trunk);
* a per-domain BN is one affine over the D*C channels: no per-sample rows;
* a per-domain 1x1 conv (the last conv) is one batched matmul over the domains, a head one matmul each.

Elementwise ops, residual adds and spatial means do not see the layout. The batch is folded once, by
the first per-domain module, and unfolded by the head (into the usual -inf padded logits). A trunk
qualifies only when its fx graph from that first module on holds nothing but the modules and ops listed
here and uses no value from before it (read once per network: :func:`foldable`); any other trunk, method
or batch runs as before (wrappers.py). Measured on Lite0 and MobileNetV3: bench/RESULTS.md M.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import layers

ENABLED = True  # under wrappers.MIXED_DEPTHWISE == "auto", for trunks that qualify
# Padded image slots may add at most this share of the batch's work (D * n <= FOLD_WASTE * B).
FOLD_WASTE = 1.5

_ELEMENTWISE_MODULES = (nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                        nn.GELU, nn.Tanh, nn.Dropout)
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.mul, torch.add, torch.mul, torch.sigmoid, F.relu, F.relu6,
                          F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.dropout}
_ELEMENTWISE_METHODS = {"add", "mul", "sigmoid", "relu", "add_", "mul_"}
_SPATIAL_DIMS = ({2, 3}, {-2, -1}, {2, -1}, {-2, 3})


@dataclass
class Fold:
    """The folded layout of one forward: ``n`` image slots per domain, each present domain's slice
    ``bounds`` [(start, end)] of the sorted batch, ``present`` their positions in the router's order
    (None: every domain, in order); ``entered`` once the batch is folded."""

    n: int
    bounds: list[tuple[int, int]]
    present: torch.Tensor | None
    entered: bool = False

    @property
    def d(self) -> int:
        return len(self.bounds)

    def rows(self, stacked: torch.Tensor) -> torch.Tensor:
        """The present domains' rows of a tensor stacked over every domain ([D_all, ...] -> [D, ...])."""
        return stacked if self.present is None else stacked.index_select(0, self.present)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """The sorted batch [B, C, H, W] as the folded [n, D*C, H, W] channels_last (one copy)."""
        if self.entered:
            return x
        self.entered = True
        b, c, h, w = x.shape
        nhwc = x.permute(0, 2, 3, 1)
        if all(e - s == self.n for s, e in self.bounds):  # [D, n, H, W, C] -> [n, H, W, D, C]
            folded = nhwc.reshape(self.d, self.n, h, w, c).permute(1, 2, 3, 0, 4).contiguous()
        else:
            folded = x.new_zeros((self.n, h, w, self.d, c))
            for i, (s, e) in enumerate(self.bounds):
                folded[:e - s, :, :, i] = nhwc[s:e]
        return folded.view(self.n, h, w, self.d * c).permute(0, 3, 1, 2)


def plan(bounds: list[tuple[int, int]], present: torch.Tensor | None) -> Fold | None:
    """The fold of a sorted batch, or None when the padded slots would waste too much work."""
    n = max(e - s for s, e in bounds)
    return Fold(n, bounds, present) if n * len(bounds) <= FOLD_WASTE * bounds[-1][1] else None


def _nhwc_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """A folded [n, G*C, H, W] as [n, H, W, G, C] (a view of channels_last memory; a copy otherwise)."""
    return x.permute(0, 2, 3, 1).unflatten(-1, (groups, -1))


def _folded_nchw(y: torch.Tensor) -> torch.Tensor:
    """[n, H, W, G, C] (contiguous) -> the folded [n, G*C, H, W] channels_last view."""
    return y.flatten(-2).permute(0, 3, 1, 2)


def shared_pointwise(conv: nn.Conv2d, x: torch.Tensor, d: int) -> torch.Tensor:
    """A shared 1x1 conv on the folded batch: one matmul over [n*H*W*D, C]."""
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    return _folded_nchw(F.linear(_nhwc_channels(x, d), weight, conv.bias))


def per_domain_pointwise(weight_t: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor, d: int) -> torch.Tensor:
    """Per-domain 1x1 convs on the folded batch: one batched matmul over the domains. ``weight_t``
    [D, Cin, Cout] (transposed), ``bias`` [D, 1, Cout] or None."""
    n, _, h, w = x.shape
    xt = _nhwc_channels(x, d).reshape(n * h * w, d, -1).transpose(0, 1)  # [D, n*H*W, Cin]
    y = torch.bmm(xt, weight_t) if bias is None else torch.baddbmm(bias, xt, weight_t)
    return _folded_nchw(y.transpose(0, 1).reshape(n, h, w, d, -1))


def depthwise(conv: nn.Conv2d, x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
              padding=None) -> torch.Tensor:
    """Per-domain depthwise convs on the folded batch: one grouped conv, ``weights`` [D*Cout, 1, k, k]
    domain-major, ``padding`` as layers.unpadded_filters gave it with them; None: ``conv``'s own
    (layers.conv_geometry: timm's dynamic "same" padding as a padded copy)."""
    if padding is None:
        x, padding = layers.conv_geometry(conv, x)
    return F.conv2d(x, weights, bias, stride=conv.stride, padding=padding, dilation=conv.dilation,
                    groups=x.shape[1])


def affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-domain eval BNs on the folded batch: ``scale``/``shift`` [D*C]."""
    return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))


def heads(heads: list[nn.Linear], x: torch.Tensor, fold: Fold, out: torch.Tensor) -> torch.Tensor:
    """Each domain's classifier on its slots of the folded features ``x`` [n, D*C], written to its rows
    of the sorted batch's -inf padded logits ``out``."""
    xv = x.view(x.shape[0], fold.d, -1)
    for i, (head, (s, e)) in enumerate(zip(heads, fold.bounds)):
        torch.addmm(head.bias, xv[:e - s, i], head.weight.t(), out=out[s:e, :head.out_features])
    return out


# --- which trunks qualify ----------------------------------------------------------------------------
def _spatial_mean(node) -> bool:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return isinstance(dims, (tuple, list)) and set(dims) in _SPATIAL_DIMS


def _flatten_from_channels(node, module=None) -> bool:
    if module is not None:
        return module.start_dim == 1 and module.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def foldable(graph, modules: dict[str, nn.Module], folds) -> bool:
    """Whether the trunk's fx ``graph`` can run domain-folded: from the first module ``folds`` accepts
    (a per-domain wrapper that knows the layout) to the output, every node is such a module, an
    elementwise module or op, a spatial mean/pool, or a flatten from the channels on, the last one
    before the output is the head (``folds(module) == "head"``), and no node reads a value from before
    the entry but the entry itself. ``folds(module)``: its role ("shared" for a shared 1x1 conv, which
    never folds the batch itself), None for a module that cannot take the folded layout."""
    nodes = [n for n in graph.nodes]
    # the entry folds the batch: a per-domain module (a shared 1x1 conv runs unfolded until one has)
    entry = next((i for i, n in enumerate(nodes) if n.op == "call_module" and folds(modules[n.target]) not in (None, "shared")), None)
    if entry is None or folds(modules[nodes[entry].target]) == "head":  # a head alone: nothing to fold
        return False
    after = set(nodes[entry:])
    output = nodes[-1]
    if output.op != "output" or len(output.all_input_nodes) != 1:
        return False
    last = output.all_input_nodes[0]
    if last.op != "call_module" or folds(modules[last.target]) != "head":
        return False
    for node in nodes[entry + 1:-1]:
        if any(a not in after for a in node.all_input_nodes):
            return False
        if node.op == "call_module":
            m = modules[node.target]
            ok = bool(folds(m)) or isinstance(m, _ELEMENTWISE_MODULES) or \
                (isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))) or \
                (isinstance(m, nn.Flatten) and _flatten_from_channels(node, m))
        elif node.op == "call_function":
            ok = node.target in _ELEMENTWISE_FUNCTIONS or (node.target is torch.flatten and _flatten_from_channels(node))
        elif node.op == "call_method":
            ok = node.target in _ELEMENTWISE_METHODS or (node.target == "mean" and _spatial_mean(node)) or \
                (node.target == "flatten" and _flatten_from_channels(node))
        else:
            ok = False
        if not ok or (node is not last and node.op == "call_module" and folds(modules[node.target]) == "head"):
            return False
    return True
