"""Per-domain wrappers: what a method injects in place of a trunk module (as PEFT's ``inject_adapter``
swaps target modules for adapter layers).

A :class:`PerDomain` wrapper holds one copy of the wrapped module per domain in ``domains``, an
``nn.ModuleDict`` keyed by domain name, each copied from the trunk's own module (the *template*, kept
outside the module tree so it is neither trained nor counted). Every wrapper of a network shares one
:class:`Router`, set by the network for the duration of a forward:

* one domain: each wrapper runs that domain's copy (the module's own forward, so a one-domain network
  is exactly the trunk);
* a mixed batch: the network sorts the batch by domain ONCE (and restores the caller's order once at
  the end), so each domain's samples are one contiguous slice (``router.slices``) and every per-domain
  module runs each domain's copy on its slice (a view: no gather or scatter per layer), the outputs
  concatenated. In eval mode norms apply one per-sample affine over the whole batch (each sample's row
  of the domains' stacked affines, one gather per forward for every norm: :mod:`.stacks`), 1x1 convs
  run per slice as matmuls on channels_last batches; see ``MIXED_DEPTHWISE`` for depthwise convs, and
  :mod:`.fusion` for the BN whose affine a depthwise conv applies while joining its parts. Each image's
  work is done once;
* a soft-sharing gate: depthwise wrappers the gate covers mix all T mixed domains' outputs (eq. 8);
* an *indexed* batch (eval only, for export): each sample's domain is a position in ``order`` given as
  a tensor; the network sorts by it and computes the slice bounds as tensors, so no Python control flow
  depends on the data and the same pass traces into a graph with a dynamic batch (ONNX ``Slice`` with
  computed bounds, ``torch.export`` unbacked sizes): still each image's work once, a domain with no
  sample runs on an empty slice.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import domain_fold, layers

NBT = "num_batches_tracked"  # BN bookkeeping, not a weight: left out of every exported state dict


class Router:
    """The domain assignment of the forward that is running (one per network, shared by its wrappers)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.domain: str | None = None      # a single-domain forward
        self.slices: list = []              # mixed (batch sorted by domain): [(domain, start, end)], ints
                                            # (eager) or 0-dim tensors (indexed: bounds computed in the graph)
        self.idx: torch.Tensor | None = None  # mixed: each (sorted) sample's position in ``order``
        self.present: torch.Tensor | None = None  # mixed, eager: the slices' domains' positions in ``order``
                                                  # (None: every domain, in order)
        self.order: list[str] = []          # every registered domain, in stacking order
        self.per_sample = False             # mixed and in eval: per-sample stacked paths allowed
        self.prefer_per_sample = False      # ... and chosen for every depthwise layer under "auto"
        self.indexed = False                # idx is the only assignment (traceable, eval): see module doc
        self.gate = None                    # GateSet of the single domain, when gated
        self.frozen_stats = False           # norms use running statistics and never update them
        self.normalized = None              # a depthwise output its sole consumer's affine is already in
                                            # (fusion.py): that norm applies only what follows its affine
        self.stacks = None                  # mixed, eval, eager, no autograd: the network's Stacks, checked
                                            # for this forward (else every stack is built afresh)
        self.fold: domain_fold.Fold | None = None  # mixed, with stacks: the trunk runs domain-folded


class SharedPointwise(nn.Conv2d):
    """A shared (trunk) 1x1 conv, as the network installs it in place of ``nn.Conv2d`` (the same module:
    class swapped, state and behaviour unchanged): in a mixed eval batch that is in the per-sample
    depthwise convs' ``batch_in_channels`` layout it runs as a matmul that keeps the layout (the conv
    would copy it back to channels_last first); every other input goes to ``nn.Conv2d.forward``."""

    router: Router  # set in __dict__ by the network

    @classmethod
    def install(cls, conv: nn.Conv2d, router: Router) -> None:
        conv.__class__ = cls
        conv.__dict__["router"] = router

    def forward(self, x):
        fold = self.router.fold
        if fold is not None and fold.entered:
            return domain_fold.shared_pointwise(self, x, fold.d)
        if self.router.stacks is not None and layers.batch_in_channels(x):
            return layers.pointwise_linear(self, x)
        return super().forward(x)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state (live tensors) without BN bookkeeping counters."""
    return {k: v for k, v in module.state_dict(keep_vars=True).items() if not k.endswith(NBT)}


def _run_eval(module: nn.Module, x):
    was = module.training
    module.train(False)
    try:
        return module(x)
    finally:
        module.train(was)


class PerDomain(nn.Module):
    """One copy of ``template`` per domain; mixed batches are grouped by domain."""

    copies_template = True  # each domain owns a copy of the trunk's module (adapters keep it shared)
    stacks_domains = False  # mixed eval batches read its domains' tensors stacked (see stacks.py)
    fused_norm = None       # a per-domain conv: the eval BN fed by it alone, whose affine it applies (fusion.py)

    def __init__(self, template: nn.Module, router: Router, path: str):
        super().__init__()
        self.domains = nn.ModuleDict()
        self.__dict__["template"] = template  # the trunk's module: loaded by load_trunk_state_dict, never trained
        self.__dict__["router"] = router
        self.path = path
        self._pointwise = layers.is_plain_pointwise(template)
        if self._pointwise:
            self.stacks_domains = True  # a domain-folded batch reads its domains' 1x1 convs stacked

    # --- domains -------------------------------------------------------------------------------
    def add(self, name: str, device, dtype, **_) -> None:
        module = copy.deepcopy(self.template).to(device=device, dtype=dtype)
        for p in module.parameters():
            p.requires_grad_(True)
        self.domains[name] = module

    def remove(self, name: str) -> None:
        del self.domains[name]

    def domain_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return _tensors(self.domains[name])

    def domain_params(self, name: str) -> list[nn.Parameter]:
        return list(self.domains[name].parameters())

    def extra_repr(self) -> str:
        return f"path={self.path!r}"

    # --- forward -------------------------------------------------------------------------------
    def forward(self, x):
        r = self.router
        if r.domain is not None:
            return self.domains[r.domain](x)
        if r.fold is not None and self._pointwise:  # fold_role "pointwise" (others run before the fold)
            x = r.fold.enter(x)
            norm = self.fused_norm
            weight_t, bias = self.stacked(_stack_pointwise_t) if norm is None else self.stacked(_stack_pointwise_t_bn, norm)
            y = domain_fold.per_domain_pointwise(r.fold.rows(weight_t), None if bias is None else r.fold.rows(bias), x, r.fold.d)
            r.normalized = y if norm is not None else None
            return y
        if self._pointwise and r.stacks is not None and layers.matmul_layout(x):
            return self.grouped(x, lambda d, part: layers.pointwise_linear(self.domains[d], part))
        return self.grouped(x)

    def grouped(self, x, fn: Callable | None = None):
        """Each domain's copy (or ``fn(domain, part)``) on its slice of the domain-sorted batch."""
        ys = [self.domains[d](x[s:e]) if fn is None else fn(d, x[s:e]) for d, s, e in self.router.slices]
        return layers.cat_batch(ys)

    def stacked(self, build: Callable[..., object], *args):
        """``build`` over every domain's copy in router order (and ``args``, hashable): from the network's
        stacks when the forward has them (built once per ``build`` and ``args``, kept until a tensor
        changes), else afresh (autograd on, or a graph being traced: the stack must be part of the graph)."""
        r = self.router
        fresh = lambda: build([self.domains[d] for d in r.order], *args)  # noqa: E731
        return fresh() if r.stacks is None else r.stacks.get((self.path, build, *args), fresh)


# How a mixed eval batch runs its depthwise convs (measured layer by layer inside the network and whole:
# bench/mixed_batch.py, bench/RESULTS.md M1):
#   "slices"      each domain's conv on its contiguous slice of the sorted batch (one call per domain);
#   "per-sample"  one grouped conv over the whole batch with each sample's gathered filters (groups = B*C,
#                 paper eq. 7) on the batch folded into channels; a channels_last batch stays folded
#                 (layers.batch_in_channels) from one such conv to the next, the shared 1x1 convs between
#                 them running as matmuls (SharedPointwise): one copy in at the first, none after (on
#                 Lite0, 10 domains x 1 image: 0.68 -> 0.84 of a one-domain batch's throughput, 0.69 of
#                 one whose 1x1 convs ran as matmuls too: bench/RESULTS.md M);
#   "folded"      one grouped conv over the batch folded domain-major: the i-th image of every domain side
#                 by side in channels ([n, H, W, D*C], shorter domains zero-padded to the longest, n), the
#                 domains' stacked filters used as they are; channels_last batches only;
#   "auto"        per layer: per-sample below PER_SAMPLE_BELOW images per domain; else folded on stride-1
#                 maps of at most FOLD_MAX_POSITIONS positions while the zero padding adds at most
#                 FOLD_WASTE of the work; else slices. On Lite0 with 10 domains (inside the network): at 1
#                 image each per-sample beats slices 2-3x on every layer and folded on every layer; at 10
#                 each folded beats slices by 0.4-0.6 ms on each stride-1 map of <= 8x8 (10 layers) and
#                 loses on 16x16 maps (2.5x: its fold copies 15 MB) and on stride-2 layers.
# Per-sample also at more images per domain when the filters it gathers per image are small next to the
# depthwise inputs they run on (the network's ``filter_share`` at the batch's resolution): the gather, and
# oneDNN's re-layout of the gathered filters, grow with B * filters, the conv with B * activations.
# Measured at 10 images per domain (bench/RESULTS.md M): per-sample wins on ResNet-26 at share 0.029 (64 px)
# and 0.007 (128 px), loses or ties on Lite0 / MobileNetV3 at 0.117-0.59.
MIXED_DEPTHWISE = "auto"
PER_SAMPLE_BELOW = 4
PER_SAMPLE_FILTER_SHARE = 0.06
FOLD_MAX_POSITIONS = 64
FOLD_WASTE = 1.5


def _depthwise_mode(conv: nn.Conv2d, x: torch.Tensor, counts: list[int], per_sample: bool) -> str:
    """The mode of one depthwise layer; ``per_sample``: the network's per-forward choice for ``auto``."""
    mode = MIXED_DEPTHWISE
    if mode == "folded" and not layers.channels_last(x):
        return "per-sample"
    if mode != "auto":
        return mode
    if per_sample:
        return "per-sample"
    if (layers.channels_last(x) and tuple(conv.stride) == (1, 1) and x.shape[-2] * x.shape[-1] <= FOLD_MAX_POSITIONS
            and max(counts) * len(counts) <= FOLD_WASTE * x.shape[0]):
        return "folded"
    return "slices"


def _stack_pointwise_t(ms):
    """Per-domain 1x1 convs as [D, Cin, Cout] (transposed for a batched matmul) and bias [D, 1, Cout]."""
    weight = torch.stack([m.weight.reshape(m.out_channels, m.in_channels).t() for m in ms])
    return weight, torch.stack([m.bias for m in ms])[:, None] if ms[0].bias is not None else None


def _stack_pointwise_t_bn(ms, norm):
    """:func:`_stack_pointwise_t` with the eval BN ``norm`` that alone consumes the convs folded in (its
    scale into the weights' output columns, its shift into the bias): conv then BN as one batched matmul."""
    weight, bias = _stack_pointwise_t(ms)
    scale, shift = norm.stacked_affine()  # [D, Cout]
    return weight * scale[:, None], (shift if bias is None else torch.addcmul(shift, bias[:, 0], scale))[:, None]


def _stack_filters(ms):
    return torch.stack([m.weight for m in ms]), torch.stack([m.bias for m in ms]) if ms[0].bias is not None else None


def _stack_filters_bn(ms, norm):
    """:func:`_stack_filters` ([D, C, 1, k, k], bias [D, C]) with the eval BN ``norm`` that alone consumes
    the convs folded in: one grouped conv with a bias does conv and BN in one pass over the activations."""
    weight, bias = _stack_filters(ms)
    scale, shift = norm.stacked_affine()  # [D, C]
    weight = weight * scale.view(*scale.shape, *[1] * (weight.dim() - 2))
    return weight, shift if bias is None else torch.addcmul(shift, bias, scale)


def _fold_filters(ms, conv, norm, size):
    """The stacked filters and bias for a domain-folded batch of spatial ``size`` (with ``norm`` folded
    in unless None), laid out for a conv without a padded copy of its input where that applies
    (layers.unpadded_filters): (weight [D, C, 1, kh', kw'], bias, padding or None)."""
    weight, bias = _stack_filters(ms) if norm is None else _stack_filters_bn(ms, norm)
    unpadded = layers.unpadded_filters(conv, size, weight)
    return (weight, bias, None) if unpadded is None else (unpadded[0], bias, unpadded[1])


class PerDomainDepthwise(PerDomain):
    """A depthwise conv per domain: per-sample filters in mixed eval batches, gate mixing when gated."""

    stacks_domains = True

    def forward(self, x):
        r = self.router
        mlp = r.gate.mlp_for(self.path) if r.gate is not None else None
        if mlp is not None:
            convs = [self.domains[d] for d in r.gate.mixed_domains]
            bias = torch.stack([c.bias for c in convs]) if convs[0].bias is not None else None
            return layers.mixed_depthwise(convs[0], x, torch.stack([c.weight for c in convs]), mlp(x), bias)
        if r.domain is not None:
            return self.domains[r.domain](x)
        if r.fold is not None:  # the next BN, when it alone reads the conv, folded into filters and bias
            x, norm = r.fold.enter(x), self.fused_norm
            w, b, padding = self.stacked(_fold_filters, self.template, norm, tuple(x.shape[-2:]))
            y = domain_fold.depthwise(self.template, x, r.fold.rows(w).flatten(0, 1),
                                      None if b is None else r.fold.rows(b).flatten(), padding)
            r.normalized = y if norm is not None else None
            return y
        if not r.per_sample or r.indexed:  # training, or a traced graph (groups = B*C needs a static B)
            return self.grouped(x)
        mode = _depthwise_mode(self.template, x, [e - s for _, s, e in r.slices], r.prefer_per_sample)
        norm = self.fused_norm if r.stacks is not None and mode != "per-sample" else None
        if mode == "slices":
            if norm is None:
                return self.grouped(x)
            parts = [self.domains[d](x[s:e]) for d, s, e in r.slices]
        else:
            w, b = self.stacked(_stack_filters)
            if mode == "per-sample":
                pick = lambda t: None if t is None else t.index_select(0, r.idx)  # noqa: E731  (3x faster than t[idx])
                return layers.per_sample_depthwise(self.template, x, pick(w), pick(b),
                                                   keep_folded=r.stacks is not None and not x.is_contiguous())
            if r.present is not None:  # folded over a subset of the domains: theirs, in slice order
                w, b = w.index_select(0, r.present), None if b is None else b.index_select(0, r.present)
            args = (self.template, x, w.flatten(0, 1), None if b is None else b.flatten(), [(s, e) for _, s, e in r.slices])
            if norm is None:
                return layers.folded_depthwise(*args)
        # the next norm's per-sample affine applied while joining the parts (fusion.py); it sees `normalized`
        scale, shift = r.stacks.affine(norm.path)
        if mode == "slices":
            y = layers.affine_into(parts, [(s, e) for _, s, e in r.slices], scale, shift)
        else:
            y = layers.folded_depthwise(*args, scale, shift)
        r.normalized = y
        return y


def _bn_affine(ms):
    scale, shift = zip(*(layers.bn_scale_shift(m) for m in ms))
    return torch.stack(scale), torch.stack(shift)


def _ln_affine(ms):
    one = [m.weight if m.weight is not None else torch.ones(m.normalized_shape) for m in ms]
    zero = [m.bias if m.bias is not None else torch.zeros(m.normalized_shape) for m in ms]
    return torch.stack(one), torch.stack(zero)


def _bn_tail(w, y):
    if hasattr(w.template, "act"):  # timm's BatchNormAct2d: BN, then its dropout and activation
        y = w.template.act(w.template.drop(y))
    return y


def _bn_per_sample(w, x, scale, shift):
    return _bn_tail(w, layers.per_sample_affine(x, scale, shift, channel_dim=1))


def _ln2d_per_sample(w, x, scale, shift):  # timm's LayerNorm2d: normalise over C of an NCHW tensor
    y = nn.functional.layer_norm(x.permute(0, 2, 3, 1), w.template.normalized_shape, None, None, w.template.eps)
    return layers.per_sample_affine(y, scale, shift, channel_dim=-1).permute(0, 3, 1, 2)


def _ln_per_sample(w, x, scale, shift):  # nn.LayerNorm over the last dimension
    y = nn.functional.layer_norm(x, w.template.normalized_shape, None, None, w.template.eps)
    return layers.per_sample_affine(y, scale, shift, channel_dim=-1)


# Norm type name -> (stacked affine builder, per-sample forward). Others are grouped per domain.
PER_SAMPLE_NORMS = {
    "BatchNorm2d": (_bn_affine, _bn_per_sample),
    "BatchNormAct2d": (_bn_affine, _bn_per_sample),
    "LayerNorm2d": (_ln_affine, _ln2d_per_sample),
    "LayerNorm": (_ln_affine, _ln_per_sample),
}


class PerDomainNorm(PerDomain):
    """A normalisation layer per domain (parameters and running statistics). In a mixed eval batch the
    kinds in PER_SAMPLE_NORMS apply each sample's own affine over the whole batch; others run per slice."""

    def __init__(self, template: nn.Module, router: Router, path: str):
        super().__init__(template, router, path)
        kind = PER_SAMPLE_NORMS.get(type(template).__name__)
        if kind is not None and kind[0] is _ln_affine and len(template.normalized_shape) != 1:
            kind = None  # a LayerNorm over several trailing dimensions: no per-channel affine
        self._kind = kind
        self.stacks_domains = kind is not None
        self.affine_only = kind is not None and kind[0] is _bn_affine  # eval BN: an affine, then its tail


    def stacked_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D, C] over every domain in router order (an eval-mode affine)."""
        return self._kind[0]([self.domains[d] for d in self.router.order])

    def forward(self, x):
        r = self.router
        if r.domain is not None:
            m = self.domains[r.domain]
            return _run_eval(m, x) if r.frozen_stats and m.training else m(x)
        if x is r.normalized:  # the conv before us applied our affine (joining its parts, or folded in)
            r.normalized = None
            return _bn_tail(self, x)
        if r.fold is not None:  # an eval BN (fold_role "norm")
            scale, shift = self.stacked(_bn_affine)
            return _bn_tail(self, domain_fold.affine(r.fold.enter(x), r.fold.rows(scale), r.fold.rows(shift)))
        if not r.per_sample or self._kind is None:
            return self.grouped(x)
        if r.stacks is not None:  # one gather per forward for every norm (stacks.Stacks.affine)
            scale, shift = r.stacks.affine(self.path)
        else:
            scale, shift = self.stacked_affine()
            scale, shift = scale[r.idx], shift[r.idx]
        return self._kind[1](self, x, scale, shift)


class PerDomainHead(PerDomain):
    """The classifier per domain, each with its own class count. A mixed batch gives a tensor padded
    with -inf beyond each sample's own classes (argmax, softmax, top-k and cross-entropy work as is).
    ``dropout[domain]``: dropout on the pooled features before that domain's classifier, in training
    only (a recipe setting, not a tensor: it is recorded with the run, not in the artifact)."""

    def __init__(self, template: nn.Module, router: Router, path: str):
        super().__init__(template, router, path)
        self.dropout: dict[str, float] = {}

    def add(self, name: str, device, dtype, num_classes: int | None = None) -> None:
        head = nn.Linear(self.template.in_features, int(num_classes), bias=True)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.domains[name] = head.to(device=device, dtype=dtype)

    def remove(self, name: str) -> None:
        super().remove(name)
        self.dropout.pop(name, None)

    def _drop(self, d: str, x):
        p = self.dropout.get(d, 0.0) if self.training else 0.0
        return F.dropout(x, p, training=True) if p > 0 else x

    def forward(self, x):
        r = self.router
        if r.domain is not None:
            return self.domains[r.domain](self._drop(r.domain, x))
        # padded to the widest head of the batch's domains (of every domain in an indexed graph: static)
        present = r.order if r.indexed else [d for d, _, _ in r.slices]
        maxk = max(self.domains[d].out_features for d in present)
        if r.fold is not None:  # the folded features [n, D*C]: each head on its slots, into the sorted rows
            out = x.new_full((r.fold.bounds[-1][1], maxk), float("-inf"))
            return domain_fold.heads([self.domains[d] for d in present], x, r.fold, out)
        if r.stacks is not None:  # eager eval, no autograd: each head writes its rows of one -inf table
            out = x.new_full((x.shape[0], maxk), float("-inf"))
            for d, s, e in r.slices:
                head = self.domains[d]
                torch.addmm(head.bias, x[s:e], head.weight.t(), out=out[s:e, :head.out_features])
            return out
        ys = [self.domains[d](self._drop(d, x[s:e])) for d, s, e in r.slices]
        return torch.cat([F.pad(y, (0, maxk - y.shape[1]), value=float("-inf")) for y in ys])


def fold_role(m: nn.Module) -> str | None:
    """What ``m`` does on a domain-folded batch (domain_fold.py), None if it cannot take one."""
    if isinstance(m, SharedPointwise):
        return "shared"
    if type(m) is PerDomainDepthwise:
        return "depthwise"
    if type(m) is PerDomainNorm and m.affine_only:
        return "norm"
    if type(m) is PerDomain and m._pointwise:
        return "pointwise"
    if type(m) is PerDomainHead:
        return "head"
    return None
