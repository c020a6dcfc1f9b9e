"""MultiDomainNet: one trunk module with a method's per-domain wrappers injected into it.

Structure
    ``net.trunk``     the trunk (an nn.Module classifier: ``resnet26_dw``, ``timm/<model>``, ...) in which
                      the method replaced the selected modules by per-domain wrappers
                      (:mod:`mdl.core.nets.wrappers`); every other module is shared and frozen.
    ``net.wrappers``  path -> wrapper, in module order; the classifier's wrapper holds each domain's head.
    ``net.gates``     nn.ModuleDict target domain -> GateSet (soft-sharing gate; methods that own depthwise).
State dicts use the trunk's own module paths (``s1.b0.dw1.weight``, ``blocks.1.0.conv_dw.weight``),
with the classifier always called ``head`` and adapters under ``<conv>.adapter.*``; BN's
``num_batches_tracked`` counters are left out.

Forward
    ``net(x, domain="svhn")``  -> logits [B, K_svhn], exactly the trunk's forward with svhn's modules.
    ``net(x, domain=[...])``   one name per sample -> [B, max K] padded with ``-inf`` beyond each
                               sample's own classes. ONE pass through the trunk over the batch sorted
                               by domain (its order restored at the end): shared modules run once on
                               the whole batch, per-domain modules once per domain on its contiguous
                               slice; in eval mode norms apply per-sample affines (one gather per
                               forward: stacks.py) and depthwise convs run per slice, as one grouped
                               per-sample conv or folded domain-major, by shape (wrappers.MIXED_DEPTHWISE);
                               a trunk whose graph allows it runs whole with the domains side by side in
                               channels instead (domain_fold.py).
    ``net(x, domain=idx)``     idx a LongTensor [B] of positions in ``list(net.domains)`` (eval only): the
                               same sorted pass with the sort and slice bounds computed as tensors, so it
                               traces into a graph with a dynamic batch (``mdl export``; see wrappers' doc).
Norms
    A norm updates its statistics only in train mode and only if it belongs to the forwarded domain:
    shared norms are always in eval mode; gated forwards use running statistics and never update them.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

from . import domain_fold, layers, wrappers
from .fusion import sole_norm_consumers, trace_trunk
from .gate import GateSet, gated_paths
from .layout import TrunkLayout
from .registry import get_method
from .stacks import Stacks
from .trunks import classifier_path, trunk_factory
from .wrappers import NBT, PerDomain, PerDomainDepthwise, PerDomainHead, PerDomainNorm, Router, SharedPointwise

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
HEAD = "head"


class MultiDomainNet(nn.Module):
    def __init__(self, arch: str, method: str = "dw", domains: dict | None = None, width: float = 1.0):
        super().__init__()
        trunk = trunk_factory(arch)(width=width)
        impl = get_method(method)()
        self.arch, self.method, self.width, self.method_impl = arch, method, float(width), impl
        self.head_path = classifier_path(trunk)
        self.layout = TrunkLayout.of(trunk, self.head_path)
        impl.check(self.layout, arch)
        trunk.requires_grad_(False)
        # The unwrapped trunk, kept by path: shared modules stay in the tree, wrapped ones become templates.
        self._plain = dict(trunk.named_modules())
        self._trunk_keys = [k for k in trunk.state_dict()
                            if not k.endswith(NBT) and not k.startswith(self.head_path + ".")]
        self.router = Router()
        self.wrappers: dict[str, PerDomain] = {}
        for path, cls in impl.select(self.layout).items():
            wrapper = cls(trunk.get_submodule(path), self.router, path)
            parent, _, child = path.rpartition(".")
            setattr(trunk.get_submodule(parent) if parent else trunk, child, wrapper)
            self.wrappers[path] = wrapper
        for m in trunk.modules():  # shared 1x1 convs read the per-sample layout of mixed batches (wrappers.py)
            if type(m) is nn.Conv2d and layers.is_plain_pointwise(m):
                SharedPointwise.install(m, self.router)
        # module path -> the wrapper owning its per-domain copies (adapters keep their conv shared)
        self._owner = {p: w for w, wrapper in self.wrappers.items() if wrapper.copies_template
                       for p in self._plain if p == w or p.startswith(w + ".")}
        self._shared_norms = [m for p, m in self._plain.items() if p in self.layout.norms and p not in self._owner]
        # what mixed eval batches read stacked over the domains (checked once per forward: stacks.py)
        self._stacks = Stacks()
        self._static = False  # assume_static: no per-forward check of every domain tensor's version
        self._stacked = [w for w in self.wrappers.values() if w.stacks_domains]
        self._affine_norms = [w for w in self._stacked if hasattr(w, "stacked_affine")]
        self._fusion_read = False  # per-domain conv -> sole-consumer BN pairs, read off the trunk at first use
        self._foldable: bool | None = None  # whether mixed batches can run domain-folded (at first use)
        self._filter_shares: dict = {}  # input shape, device, dtype -> filter_share (read at first use)
        self.trunk = trunk
        self.gates = nn.ModuleDict()
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        for name, k in (domains or {}).items():
            self.add_domain(name, k)

    # ------------------------------------------------------------------ domains
    @property
    def head(self) -> PerDomainHead:
        return self.wrappers[self.head_path]

    @property
    def domains(self) -> dict[str, int]:
        return {n: m.out_features for n, m in self.head.domains.items()}

    def _check_domain(self, name: str) -> None:
        if name not in self.head.domains:
            valid = ", ".join(self.head.domains) or "(none)"
            raise KeyError(f"unknown domain {name!r}; registered domains: {valid}")

    def add_domain(self, name: str, num_classes: int) -> None:
        """A new domain starts from the trunk: copies of its per-domain modules, a fresh head."""
        if not isinstance(name, str) or not _NAME_RE.match(name) or hasattr(nn.ModuleDict(), name):
            raise ValueError(f"invalid domain name {name!r}: use letters, digits, '_' or '-' "
                             "(starting with a letter or digit, not an nn.ModuleDict attribute)")
        if name in self.head.domains:
            raise ValueError(f"domain {name!r} already exists; remove it first")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        dev, dt = self._anchor.device, self._anchor.dtype  # follow net.to(device/dtype)
        for w in self.wrappers.values():
            w.add(name, dev, dt, num_classes=int(num_classes))
        self.train(self.training)  # new copies follow the network's mode

    def set_head_dropout(self, name: str, p: float) -> None:
        """Dropout (rate ``p``, training only) on ``name``'s pooled features before its classifier:
        Guo et al.'s recipe for gtsrb, ucf101 and daimlerpedcls."""
        self._check_domain(name)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.head.dropout[name] = float(p)

    def remove_domain(self, name: str) -> None:
        self._check_domain(name)
        for w in self.wrappers.values():
            w.remove(name)
        if name in self.gates:
            del self.gates[name]

    def _key(self, path: str, k: str) -> str:
        return f"{HEAD if path == self.head_path else path}.{k}"

    def domain_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The domain's own tensors, live (no copies), by canonical key."""
        self._check_domain(name)
        return {self._key(p, k): t for p, w in self.wrappers.items() for k, t in w.domain_tensors(name).items()}

    # ------------------------------------------------------------------ state dicts
    @staticmethod
    def _export(tensors: dict) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}

    @staticmethod
    def _strict_copy(what: str, target: dict, given: dict) -> None:
        given = {k: v for k, v in given.items() if not k.endswith(NBT)}
        missing = sorted(set(target) - set(given))
        unexpected = sorted(set(given) - set(target))
        if missing or unexpected:
            raise ValueError(f"{what}: missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                             f"unexpected keys {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        for k, t in target.items():
            if tuple(given[k].shape) != tuple(t.shape):
                raise ValueError(f"{what}: shape mismatch for {k!r}: got {tuple(given[k].shape)}, "
                                 f"expected {tuple(t.shape)}")
        with torch.no_grad():
            for k, t in target.items():
                t.copy_(given[k])

    def domain_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The domain's own tensors (per-domain modules, adapters, norm statistics, head); CPU copies."""
        return self._export(self.domain_tensors(name))

    def load_domain_state_dict(self, name: str, tensors: dict) -> None:
        """Strict load; creates the domain (class count from ``head.bias``) if it does not exist."""
        if name not in self.head.domains:
            if "head.bias" not in tensors:
                raise ValueError(f"domain {name!r}: tensors lack 'head.bias', cannot infer class count")
            self.add_domain(name, tensors["head.bias"].shape[0])
        for p, w in self.wrappers.items():  # wrappers whose shapes the stored tensors decide (low-rank adapters)
            if hasattr(w, "match_shapes"):
                w.match_shapes(name, {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")})
        self._strict_copy(f"domain {name!r}", self.domain_tensors(name), tensors)
        self._stacks.clear()

    def _trunk_tensor(self, key: str, domain: str | None) -> torch.Tensor:
        path, _, leaf = key.rpartition(".")
        owner = self._owner.get(path)
        if owner is None:
            module = self._plain[path]
        else:
            module = self.wrappers[owner].domains[domain]
            if path != owner:
                module = module.get_submodule(path[len(owner) + 1:])
        return getattr(module, leaf)

    def _shared_tensors(self) -> dict[str, torch.Tensor]:
        """The trunk tensors no domain owns a copy of, live."""
        return {k: self._trunk_tensor(k, None) for k in self._trunk_keys if k.rpartition(".")[0] not in self._owner}

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        return self._export(self._shared_tensors())

    def load_shared_state_dict(self, tensors: dict) -> None:
        self._strict_copy("shared tensors", self._shared_tensors(), tensors)

    def trunk_state_dict(self, domain: str | None = None) -> dict[str, torch.Tensor]:
        """Canonical, method-independent trunk weights (no head, no adapters) as seen by ``domain``.
        ``domain`` may be None only if the method keeps no trunk tensors per domain."""
        if any(k.rpartition(".")[0] in self._owner for k in self._trunk_keys):
            if domain is None:
                raise ValueError(f"method {self.method!r} keeps trunk tensors per domain; name a domain")
        if domain is not None:
            self._check_domain(domain)
        return self._export({k: self._trunk_tensor(k, domain) for k in self._trunk_keys})

    def load_trunk_state_dict(self, state: dict) -> None:
        """Load the shared modules and the templates new domains are copied from (head excluded: a
        ``head.*`` or the trunk's own classifier keys are ignored). Existing domains are not touched."""
        head_keys = {f"{p}.{t}" for p in (self.head_path, HEAD) for t in ("weight", "bias")}
        given = {k: v for k, v in state.items() if k not in head_keys}
        live = {}
        for k in self._trunk_keys:
            path, _, leaf = k.rpartition(".")
            live[k] = getattr(self._plain[path], leaf)
        self._strict_copy(f"trunk {self.arch!r} (width {self.width:g})", live, given)

    def _apply(self, fn, recurse=True):
        self._stacks.clear()  # .to() / .half(): the stacks hold copies of the tensors being replaced
        return super()._apply(fn, recurse)

    def assume_static(self, static: bool = True) -> "MultiDomainNet":
        """Promise (``static=True``) that no domain tensor changes in place or by ``.data =`` outside the
        network's own methods until ``assume_static(False)``: mixed eval forwards then skip checking every
        domain tensor's version and storage (stacks.py; 0.6-0.8 ms a forward on Lite0 with 10 domains, of
        an 11 ms batch of 10). What goes through the network still resets the stacks: ``train()``,
        ``load_domain_state_dict``, adapter fusion, ``add_domain``/``remove_domain``, ``.to()``. For
        networks nothing edits (``mdl serve``, ``mdl predict``); a plain network checks."""
        self._static = bool(static)
        self._stacks.clear()
        return self

    # ------------------------------------------------------------------ training helpers
    def train(self, mode: bool = True):
        if mode:
            self._stacks.clear()  # training changes tensors in place (optimizer steps, BN statistics)
        super().train(mode)
        for m in self._shared_norms:  # shared statistics are the trunk's: never updated
            m.train(False)
        return self

    def trainable_parameters(self, domain: str) -> list[nn.Parameter]:
        self._check_domain(domain)
        return [p for w in self.wrappers.values() for p in w.domain_params(domain)]

    def new_parameters(self, domain: str) -> list[nn.Parameter]:
        """The domain's tensors that do not start as copies of the trunk's: its head and any adapters
        (a transfer recipe gives them their own learning rate)."""
        self._check_domain(domain)
        return [p for path, w in self.wrappers.items() if path == self.head_path or not w.copies_template
                for p in w.domain_params(domain)]

    def domain_batchnorms(self, domain: str) -> list[nn.Module]:
        """The batch norms whose running statistics belong to ``domain`` (what a BN statistics policy
        governs); shared norms are the trunk's and are never updated anyway."""
        self._check_domain(domain)
        return [m for w in self.wrappers.values() if domain in w.domains
                for m in w.domains[domain].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _train_only(self, params: list[nn.Parameter]) -> list[nn.Parameter]:
        """requires_grad True for ``params`` and False for every other parameter; returns ``params``."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        return params

    def set_trainable(self, domain: str) -> list[nn.Parameter]:
        """requires_grad True only for ``domain``'s own parameters; returns them."""
        return self._train_only(self.trainable_parameters(domain))

    def train_domain(self, domain: str) -> list[nn.Parameter]:
        self.train()
        return self.set_trainable(domain)

    def parameter_counts(self) -> dict:
        """Learnable parameters (BN running statistics are buffers and not counted)."""
        per_domain = {n: self.trainable_parameters(n) for n in self.domains}
        own = {id(p) for ps in per_domain.values() for p in ps}
        return {"shared": sum(p.numel() for p in self.trunk.parameters() if id(p) not in own),
                "domains": {n: sum(p.numel() for p in ps) for n, ps in per_domain.items()},
                "gates": {n: sum(p.numel() for p in g.parameters()) for n, g in self.gates.items()}}

    # ------------------------------------------------------------------ gates
    def add_gate(self, target: str, placement: str = "all", mixed_domains: Iterable[str] | None = None,
                 scope: str = "gate"):
        if not self.method_impl.gateable:
            raise ValueError(f"soft-sharing gates need method 'dw', this network uses {self.method!r}")
        self._check_domain(target)
        mixed = list(mixed_domains) if mixed_domains is not None else list(self.domains)
        for d in mixed:
            self._check_domain(d)
        if target not in mixed:
            raise ValueError(f"gate for {target!r}: the target must be one of the mixed domains {mixed}")
        if len(set(mixed)) != len(mixed):
            raise ValueError(f"gate for {target!r}: duplicate mixed domains {mixed}")
        paths = gated_paths(self.trunk, self.layout.depthwise, placement)
        layers = {p: self.wrappers[p].template.in_channels for p in paths}
        self.gates[target] = GateSet(layers, placement, mixed, scope).to(self._anchor.device)
        return self.gates[target]

    def _check_gate(self, target: str) -> GateSet:
        if target not in self.gates:
            raise KeyError(f"no gate for domain {target!r}; gated domains: {', '.join(self.gates) or '(none)'}")
        return self.gates[target]

    def gate_parameters(self, target: str) -> list[nn.Parameter]:
        return list(self._check_gate(target).parameters())

    def set_trainable_gate(self, target: str) -> list[nn.Parameter]:
        """requires_grad True only for what the gate's scope trains (see gate.SCOPES); returns them."""
        params = self.gate_parameters(target)
        if self.gates[target].scope == "gate+domain":
            params += [p for path, w in self.wrappers.items() if path not in self.layout.depthwise
                       for p in w.domain_params(target)]
        return self._train_only(params)

    def gate_meta(self, target: str) -> dict:
        return self._check_gate(target).meta()

    def gate_state_dict(self, target: str) -> dict[str, torch.Tensor]:
        return self._export(self._check_gate(target).flat_state())

    def load_gate_state_dict(self, target: str, tensors: dict, mixed_domains: list[str], placement: str,
                             scope: str = "gate"):
        gate = self.add_gate(target, placement, mixed_domains, scope)
        self._strict_copy(f"gate {target!r}", gate.flat_state(), tensors)

    # ------------------------------------------------------------------ adapter fusion
    def _fusable(self, domain: str) -> list:
        if not self.method_impl.fusable:
            raise ValueError(f"method {self.method!r} has no adapters to fuse; only 'parallel-adapter'")
        self._check_domain(domain)
        return [w for w in self.wrappers.values() if hasattr(w, "fuse")]

    def fuse_adapters(self, domain: str) -> None:
        """Fold each 1x1 parallel adapter into its kxk filter (deployment form: one conv per layer).
        Gradients do not reach the adapters while fused."""
        for w in self._fusable(domain):
            w.fuse(domain)
        self._stacks.clear()

    def unfuse_adapters(self, domain: str) -> None:
        """Back to the two-branch form; adapters recovered exactly up to one float rounding."""
        for w in self._fusable(domain):
            if domain in w.fused:
                w.unfuse(domain)
        self._stacks.clear()

    @property
    def fused(self) -> set[str]:
        return {d for w in self.wrappers.values() for d in getattr(w, "fused", {})}

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, domain, use_gate: bool = False) -> torch.Tensor:
        """Logits for ``x`` [B,3,H,W].

        ``domain`` a name -> [B, K_domain]. ``domain`` a list of B names (one per sample) -> a padded
        tensor [B, max K over the batch's domains] where sample i's entries at and beyond its own K are
        ``-inf`` (``out[i, :K]`` are its plain logits); a list naming a single domain returns that
        domain's [B, K] logits. ``use_gate=True`` runs each sample's domain with its soft-sharing gate.
        Unknown names raise KeyError naming the registered domains.
        """
        r = self.router
        if isinstance(domain, torch.Tensor):
            return self._forward_indexed(x, domain, use_gate)
        if isinstance(domain, str):
            self._check_domain(domain)
            gate = self._check_gate(domain) if use_gate else None
            if gate is not None:
                for d in gate.mixed_domains:
                    if d not in self.head.domains:
                        raise KeyError(f"gate for {domain!r} mixes domain {d!r}, which is no longer registered")
            # a gate trained with its domain's norms (scope gate+domain) updates their statistics in training
            r.domain, r.gate, r.frozen_stats = domain, gate, gate is not None and gate.scope == "gate"
            try:
                return self.trunk(x)
            finally:
                r.clear()
        names = list(domain)
        if len(names) != x.shape[0]:
            raise ValueError(f"got {len(names)} domain names for a batch of {x.shape[0]} samples")
        uniq = list(dict.fromkeys(names))
        for d in uniq:
            self._check_domain(d)
        if len(uniq) == 1:
            return self.forward(x, uniq[0], use_gate)
        if use_gate:  # each domain's gate mixes a different set: one gated pass per domain
            groups = [(d, torch.tensor([i for i, n in enumerate(names) if n == d], device=x.device)) for d in uniq]
            return self._per_domain(x, groups)
        # Sort the batch by domain once: every per-domain module then works on contiguous slices (views).
        order = list(self.head.domains)
        pos = {d: i for i, d in enumerate(order)}
        perm = sorted(range(len(names)), key=lambda i: pos[names[i]])
        counts = {d: 0 for d in sorted(uniq, key=pos.__getitem__)}
        for n in names:
            counts[n] += 1
        slices, start = [], 0
        for d, n in counts.items():
            slices.append((d, start, start + n))
            start += n
        idx = torch.tensor([pos[names[i]] for i in perm], device=x.device)
        ix = None if perm == list(range(len(names))) else torch.tensor(perm, device=x.device)
        present = None if len(counts) == len(order) else torch.tensor([pos[d] for d in counts], device=x.device)
        return self._sorted_forward(x, ix, idx, slices, order, present=present)

    def _sorted_forward(self, x, perm, idx_sorted, slices, order, indexed: bool = False, present=None):
        """The trunk over ``x[perm]`` (sorted by domain: ``slices`` [(domain, start, end)], the domains at
        ``present`` in ``order``, None: all), back in ``x``'s order. ``perm`` None: already sorted."""
        r = self.router
        eager = not self.training and not indexed and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        fold = None
        if eager and wrappers.MIXED_DEPTHWISE == "auto" and domain_fold.ENABLED and x.dim() == 4 and self.foldable():
            fold = domain_fold.plan([(s, e) for _, s, e in slices], present)
        prefer = fold is None and not self.training and not indexed and (
            x.shape[0] < wrappers.PER_SAMPLE_BELOW * len(slices)
            or self.filter_share(x) < wrappers.PER_SAMPLE_FILTER_SHARE)
        r.order, r.slices, r.idx, r.present = order, slices, idx_sorted, present
        r.per_sample, r.indexed, r.prefer_per_sample = not self.training, indexed, prefer
        if eager:
            self._stacks.refresh(self._stacked, self._affine_norms, order, idx_sorted, poll=not self._static)
            r.stacks, r.fold = self._stacks, fold
            if not self._fusion_read:
                self._read_fusion()
        try:
            y = self.trunk(x if perm is None else x[perm])  # advanced indexing keeps channels_last (index_select not)
        finally:
            self._stacks.release()
            r.clear()
        return y if perm is None else y[torch.argsort(perm)]

    def filter_share(self, x: torch.Tensor) -> float:
        """Per image, the size of the per-domain depthwise filters over the size of their inputs, for
        batches shaped like ``x`` (what a per-sample depthwise pass gathers per unit of conv work). Read
        once per input shape, device and dtype off a one-image, one-domain pass (hooks on the depthwise
        wrappers); inf without per-domain depthwise convs or inside a compiled graph."""
        key = (tuple(x.shape[1:]), x.device, x.dtype)
        share = self._filter_shares.get(key)
        if share is None:
            convs = [w for w in self.wrappers.values() if isinstance(w, PerDomainDepthwise)]
            if not convs or torch.compiler.is_compiling():
                return float("inf")
            sizes = []
            hooks = [w.register_forward_pre_hook(lambda m, a: sizes.append((m.template.weight.numel(), a[0][0].numel())))
                     for w in convs]
            try:
                with torch.no_grad():
                    self.forward(x[:1], next(iter(self.head.domains)))
            finally:
                for h in hooks:
                    h.remove()
            share = self._filter_shares[key] = sum(f for f, _ in sizes) / max(1, sum(a for _, a in sizes))
        return share

    def foldable(self) -> bool:
        """Whether mixed eval batches can run the trunk domain-folded (domain_fold.py): read once off the
        trunk's fx graph; False for a trunk fx cannot trace."""
        if self._foldable is None:
            graph = trace_trunk(self.trunk, (PerDomain,))
            self._foldable = graph is not None and domain_fold.foldable(
                graph, dict(self.trunk.named_modules()), wrappers.fold_role)
        return self._foldable

    def _read_fusion(self) -> None:
        """Pair each per-domain depthwise or 1x1 conv with the per-domain BN that alone consumes it (fusion.py)."""
        pairs = sole_norm_consumers(self.trunk, (PerDomain,), (PerDomainNorm,), (PerDomain,))
        for conv_path, norm_path in pairs.items():
            conv, norm = self.wrappers.get(conv_path), self.wrappers.get(norm_path)
            # depthwise convs apply it in every mixed mode but per-sample, per-domain 1x1 convs in a fold only
            if wrappers.fold_role(conv) in ("depthwise", "pointwise") and isinstance(norm, PerDomainNorm) and norm.affine_only:
                conv.__dict__["fused_norm"] = norm
        self._fusion_read = True

    def _forward_indexed(self, x: torch.Tensor, idx: torch.Tensor, use_gate: bool = False) -> torch.Tensor:
        if self.training:
            raise ValueError("a domain index tensor drives eval-mode forwards only; call net.eval() first")
        if use_gate:
            raise ValueError("gated forwards take domain names, not a domain index tensor")
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"domain index tensor must be integer [B], got {idx.dtype} {tuple(idx.shape)}")
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and idx.numel() and (
                int(idx.min()) < 0 or int(idx.max()) >= len(self.domains)):
            raise ValueError(f"domain index out of range 0..{len(self.domains) - 1}")
        order = list(self.head.domains)
        if not order:
            raise KeyError("no domains in this network")
        # The same sorted pass with every bound a tensor (traceable; no Python branch on the data): the sort
        # key idx*B + position is unique, so any sort is the stable one (ONNX has no stable sort).
        idx = idx.long()
        n = idx.shape[0]
        perm = torch.argsort(idx * n + torch.arange(n, device=idx.device))
        idx_sorted = idx[perm]
        counts = (idx_sorted.unsqueeze(1) == torch.arange(len(order), device=idx.device).unsqueeze(0)).sum(0)
        ends = torch.cumsum(counts, 0)
        starts = ends - counts
        slices = [(d, starts[i], ends[i]) for i, d in enumerate(order)]
        return self._sorted_forward(x, perm, idx_sorted, slices, order, indexed=True)

    def _per_domain(self, x, groups):
        maxk = max(self.domains[d] for d, _ in groups)
        out = None
        for d, ix in groups:
            y = self.forward(x.index_select(0, ix), d, use_gate=True)
            if out is None:
                out = y.new_full((x.shape[0], maxk), float("-inf"))
            out[ix, : y.shape[1]] = y
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, method={self.method!r}, width={self.width:g}, domains={self.domains}"


def create_network(arch: str, method: str = "dw", domains: dict | None = None,
                   width: float = 1.0) -> MultiDomainNet:
    """Build a multi-domain network: ``arch`` in list_trunks() or ``timm/<model>``, ``method`` in
    list_methods(), ``domains`` {name: num_classes}, ``width`` channel multiplier (own families only)."""
    if not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return MultiDomainNet(arch, method, domains, width)
