"""MultiDomainNet: one trunk, a shared tensor store, and one container of tensors per domain.

Storage
    ``net.shared``        TensorStore of the trunk tensors the method shares (frozen: requires_grad False
                          unless the caller flips it).
    ``net.domain_store``  nn.ModuleDict domain -> TensorStore holding that domain's own trunk tensors
                          (per the method's partition), its adapters and its head. Adding, removing or
                          loading a domain touches only its own entry.
    ``net.gates``         nn.ModuleDict target domain -> GateSet (soft-sharing gate, dw only).
All state dicts use canonical dotted keys (``s1.b0.dw1.weight``, ``head.bias`` ...).

Forward
    ``net(x, domain="svhn")``      -> logits [B, K_svhn].
    ``net(x, domain=[...])``       one name per sample -> a padded tensor [B, max K] whose entries
                                   beyond a sample's own class count are ``-inf`` (so argmax, softmax,
                                   top-k and cross-entropy work directly; slice ``[:, :K_d]`` for the
                                   plain logits). In eval mode, for methods that only re-partition the
                                   trunk (dw, dw-sharing, classifier-only, finetune, bn) the batch runs
                                   in ONE stacked pass (paper eq. 7): per-sample depthwise filters
                                   gathered into one grouped conv, per-sample BN scale/shift gathered
                                   from [D, C], shared convs once on the whole batch, per-domain convs
                                   and heads grouped by domain. In train mode (BN batch statistics must
                                   be per domain), with a gate, or for adapter methods, samples are
                                   grouped per domain and run through the single-domain path.
BatchNorm
    A BN updates its running statistics only when the module is in train mode AND the BN belongs to
    the forwarded domain (per-domain role). Shared BN (classifier-only) always uses its frozen
    statistics; gated forwards use running statistics and never update them.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import layers
from .gate import GateSet, gated_layers
from .registry import get_method, get_trunk, list_methods, list_trunks  # noqa: F401
from .store import TensorStore
from .trunks import BN_TENSORS, TensorDef, TrunkSpec

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
HEAD_KEYS = ("head.weight", "head.bias")


def _init_trunk_tensor(key: str, d: TensorDef) -> torch.Tensor:
    t = torch.empty(d.shape)
    if d.role == "bn":  # gamma 1, beta 0, mean 0, var 1
        return t.fill_(1.0) if key.endswith((".weight", ".running_var")) else t.zero_()
    if d.role == "dw":  # variance-preserving for a 9-tap filter
        return nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu")
    return nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")


class MultiDomainNet(nn.Module):
    def __init__(self, arch: str, method: str = "dw", domains: dict | None = None, width: float = 1.0):
        super().__init__()
        spec: TrunkSpec = get_trunk(arch)(width)
        impl = get_method(method)()
        impl.check_trunk(arch)
        self.arch, self.method, self.width = arch, method, float(width)
        self.spec, self.method_impl = spec, impl
        self._domain_trunk_keys = [k for k, d in spec.tensors.items() if d.role in impl.domain_roles]
        self._shared_keys = [k for k, d in spec.tensors.items() if d.role not in impl.domain_roles]
        self._domain_key_set = set(self._domain_trunk_keys)
        self._adapters = impl.adapter_tensors(spec)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        # Template the per-domain tensors are copied from (random init until load_trunk_state_dict).
        self._template = {k: _init_trunk_tensor(k, d) for k, d in spec.tensors.items()}
        self.shared = TensorStore()
        for k in self._shared_keys:
            d = spec.tensors[k]
            self.shared.add(k, self._template[k].clone(), d.is_param)
            if d.is_param:
                self.shared.get(k).requires_grad_(False)
        self.domain_store = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        self.fused = nn.ModuleDict()  # parallel-adapter deployment weights (non-persistent)
        for name, k in (domains or {}).items():
            self.add_domain(name, k)

    # ------------------------------------------------------------------ domains
    @property
    def domains(self) -> dict[str, int]:
        return {n: s.get("head.bias").shape[0] for n, s in self.domain_store.items()}

    def _check_domain(self, name: str) -> None:
        if name not in self.domain_store:
            valid = ", ".join(self.domain_store) or "(none)"
            raise KeyError(f"unknown domain {name!r}; registered domains: {valid}")

    def add_domain(self, name: str, num_classes: int) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name) or hasattr(nn.ModuleDict(), name):
            raise ValueError(f"invalid domain name {name!r}: use letters, digits, '_' or '-' "
                             "(starting with a letter or digit, not an nn.ModuleDict attribute)")
        if name in self.domain_store:
            raise ValueError(f"domain {name!r} already exists; remove it first")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        dev, dt = self._anchor.device, self._anchor.dtype  # follow net.to(device/dtype)
        st = TensorStore()
        for k in self._domain_trunk_keys:
            st.add(k, self._template[k].to(dev, dt, copy=True), self.spec.tensors[k].is_param)
        for k, (d, init) in self._adapters.items():
            st.add(k, init(d.shape).to(dev, dt), d.is_param)
        head_w = torch.empty(int(num_classes), self.spec.out_channels).normal_(0.0, 0.01)
        st.add("head.weight", head_w.to(dev, dt), True)
        st.add("head.bias", torch.zeros(int(num_classes)).to(dev, dt), True)
        self.domain_store[name] = st

    def remove_domain(self, name: str) -> None:
        self._check_domain(name)
        del self.domain_store[name]
        if name in self.fused:
            del self.fused[name]
        if name in self.gates:
            del self.gates[name]

    def _tensor(self, domain: str, key: str) -> torch.Tensor:
        if self.is_domain_key(key):
            return self.domain_store[domain].get(key)
        return self.shared.get(key)

    def is_domain_key(self, key: str) -> bool:
        return key in self._domain_key_set or key in self._adapters or key in HEAD_KEYS

    # ------------------------------------------------------------------ state dicts
    @staticmethod
    def _export(tensors: dict) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}

    @staticmethod
    def _strict_copy(what: str, target: dict, given: dict) -> None:
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
        """The domain's own tensors (trunk part per the method, adapters, BN stats, head); CPU copies."""
        self._check_domain(name)
        return self._export(self.domain_store[name].flat())

    def load_domain_state_dict(self, name: str, tensors: dict) -> None:
        """Strict load; creates the domain (class count from ``head.bias``) if it does not exist."""
        if name not in self.domain_store:
            if "head.bias" not in tensors:
                raise ValueError(f"domain {name!r}: tensors lack 'head.bias', cannot infer class count")
            self.add_domain(name, tensors["head.bias"].shape[0])
        self._strict_copy(f"domain {name!r}", self.domain_store[name].flat(), tensors)

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        return self._export(self.shared.flat())

    def load_shared_state_dict(self, tensors: dict) -> None:
        self._strict_copy("shared tensors", self.shared.flat(), tensors)

    def trunk_state_dict(self, domain: str | None = None) -> dict[str, torch.Tensor]:
        """Canonical, method-independent trunk weights (stem, convs, BN params + stats; no head, no
        adapters) as seen by ``domain``. ``domain`` may be None only if the method has no per-domain
        trunk tensors."""
        if self._domain_trunk_keys:
            if domain is None:
                raise ValueError(f"method {self.method!r} keeps trunk tensors per domain; name a domain")
            self._check_domain(domain)
        elif domain is not None:
            self._check_domain(domain)
        return self._export({k: self._tensor(domain, k) for k in self.spec.tensors})

    def load_trunk_state_dict(self, state: dict) -> None:
        """Load the shared tensors and keep ``state`` as the template new domains are copied from.
        Existing domains are not touched."""
        ref = {k: torch.empty(d.shape) for k, d in self.spec.tensors.items()}
        self._strict_copy(f"trunk {self.arch!r} (width {self.width})", ref, state)
        self._template = {k: v.detach().float().cpu() for k, v in ref.items()}
        with torch.no_grad():
            for k, t in self.shared.flat().items():
                t.copy_(self._template[k])

    # ------------------------------------------------------------------ training helpers
    def trainable_parameters(self, domain: str) -> list[nn.Parameter]:
        self._check_domain(domain)
        return self.domain_store[domain].params()

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
        return {"shared": self.shared.num_params(),
                "domains": {n: s.num_params() for n, s in self.domain_store.items()},
                "gates": {n: sum(p.numel() for p in g.parameters()) for n, g in self.gates.items()}}

    # ------------------------------------------------------------------ gates
    def add_gate(self, target: str, placement: str = "all", mixed_domains: Iterable[str] | None = None):
        if self.method != "dw":
            raise ValueError(f"soft-sharing gates need method 'dw', this network uses {self.method!r}")
        self._check_domain(target)
        mixed = list(mixed_domains) if mixed_domains is not None else list(self.domain_store)
        for d in mixed:
            self._check_domain(d)
        if target not in mixed:
            raise ValueError(f"gate for {target!r}: the target must be one of the mixed domains {mixed}")
        if len(set(mixed)) != len(mixed):
            raise ValueError(f"gate for {target!r}: duplicate mixed domains {mixed}")
        gated_layers(self.spec, placement)  # validates placement
        self.gates[target] = GateSet(self.spec, placement, mixed).to(self._anchor.device)
        return self.gates[target]

    def _check_gate(self, target: str) -> GateSet:
        if target not in self.gates:
            raise KeyError(f"no gate for domain {target!r}; gated domains: {', '.join(self.gates) or '(none)'}")
        return self.gates[target]

    def gate_parameters(self, target: str) -> list[nn.Parameter]:
        return list(self._check_gate(target).parameters())

    def set_trainable_gate(self, target: str) -> list[nn.Parameter]:
        """requires_grad True only for ``target``'s gate; returns its parameters."""
        return self._train_only(self.gate_parameters(target))

    def gate_meta(self, target: str) -> dict:
        return self._check_gate(target).meta()

    def gate_state_dict(self, target: str) -> dict[str, torch.Tensor]:
        return self._export(self._check_gate(target).flat_state())

    def load_gate_state_dict(self, target: str, tensors: dict, mixed_domains: list[str], placement: str):
        gate = self.add_gate(target, placement, mixed_domains)
        self._strict_copy(f"gate {target!r}", gate.flat_state(), tensors)

    # ------------------------------------------------------------------ adapter fusion
    def _check_fusable(self, domain: str) -> None:
        if not self.method_impl.fusable:
            raise ValueError(f"method {self.method!r} has no adapters to fuse; only 'parallel-adapter'")
        self._check_domain(domain)

    def fuse_adapters(self, domain: str) -> None:
        """Fold each 1x1 parallel adapter into its 3x3 filter: W = W3x3 + pad(W1x1) (deployment form;
        the forward then runs one conv per unit). Gradients do not reach the adapters while fused."""
        self._check_fusable(domain)
        from .methods.parallel_adapter import adapter_key
        st = TensorStore()
        with torch.no_grad():
            for u in self.spec.units:
                if u.kind == "plain":
                    k = u.key("conv") + ".weight"
                    w = self._tensor(domain, k) + F.pad(self._tensor(domain, adapter_key(u)), (1, 1, 1, 1))
                    st.add(k, w.detach().clone(), is_param=False, persistent=False)
        self.fused[domain] = st

    def unfuse_adapters(self, domain: str) -> None:
        """Recover the 1x1 adapters from the fused filters (centre tap minus the shared 3x3 centre)
        and return to the two-branch form. Exact up to one float rounding of the subtraction."""
        self._check_fusable(domain)
        if domain not in self.fused:
            return
        from .methods.parallel_adapter import adapter_key
        st = self.fused[domain]
        with torch.no_grad():
            for u in self.spec.units:
                if u.kind == "plain":
                    k = u.key("conv") + ".weight"
                    delta = st.get(k) - self._tensor(domain, k)
                    self._tensor(domain, adapter_key(u)).copy_(delta[:, :, 1:2, 1:2])
        del self.fused[domain]

    def fused_weight(self, domain: str, key: str):
        if domain in self.fused:
            return self.fused[domain].get(key)
        return None

    # ------------------------------------------------------------------ forward
    def _unit(self, x, u, ctx):
        if u.kind == "dw":
            y = ctx.depthwise(x, u.key("dw"), u.stride)
            y = ctx.conv(y, u.key("pw") + ".weight", 1, 0)
        else:
            y = self.method_impl.conv3x3(self, x, u, ctx)
        return ctx.bn(y, u.key("bn"))

    def _features(self, x, ctx):
        x = F.relu(self._unit(x, self.spec.stem, ctx))
        for blk in self.spec.blocks:
            y = F.relu(self._unit(x, blk.unit1, ctx))
            y = self._unit(y, blk.unit2, ctx)
            x = F.relu(y + layers.shortcut(x, blk.unit2.cout, blk.downsample))
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor, domain, use_gate: bool = False) -> torch.Tensor:
        """Logits for ``x`` [B,3,H,W].

        ``domain`` a name -> [B, K_domain]. ``domain`` a list of B names (one per sample) -> a padded
        tensor [B, max K over the batch's domains] where sample i's entries at and beyond its own K are
        ``-inf`` (argmax / softmax / top-k / cross-entropy work directly; ``out[i, :K]`` are its plain
        logits). A list naming a single domain returns that domain's [B, K] logits. In eval mode
        stackable methods run the mixed batch in one stacked pass, otherwise samples are grouped per
        domain. ``use_gate=True`` runs each sample's domain with its soft-sharing gate (method dw).
        Unknown names raise KeyError naming the registered domains.
        """
        if isinstance(domain, str):
            self._check_domain(domain)
            gate = self._check_gate(domain) if use_gate else None
            if gate is not None:
                for d in gate.mixed_domains:
                    if d not in self.domain_store:
                        raise KeyError(f"gate for {domain!r} mixes domain {d!r}, which is no longer registered")
            return _DomainCtx(self, domain, gate).run(x)
        names = list(domain)
        if len(names) != x.shape[0]:
            raise ValueError(f"got {len(names)} domain names for a batch of {x.shape[0]} samples")
        uniq = list(dict.fromkeys(names))
        for d in uniq:
            self._check_domain(d)
        if len(uniq) == 1:
            return self.forward(x, uniq[0], use_gate)
        groups = [(d, torch.tensor([i for i, n in enumerate(names) if n == d], device=x.device))
                  for d in uniq]
        if not self.training and not use_gate and self.method_impl.stackable:
            return _StackedCtx(self, uniq, names, groups, x.device).run(x)
        return self._grouped(x, groups, use_gate)

    def _stack_cache(self) -> dict:
        """Inference-only cache of stacked per-domain tensors, invalidated by any change to a domain
        tensor (object identity, storage (e.g. after .to()), in-place version counter) or to the
        set of domains."""
        sig = tuple((d, tuple((id(t), t.data_ptr(), t._version) for t in st.flat().values()))
                    for d, st in self.domain_store.items())
        if getattr(self, "_stack_sig", None) != sig:
            self._stack_sig, self._stack_store = sig, {}
        return self._stack_store

    def _grouped(self, x, groups, use_gate):
        maxk = max(self.domains[d] for d, _ in groups)
        out = None
        for d, ix in groups:
            y = self.forward(x.index_select(0, ix), d, use_gate)
            if out is None:
                out = y.new_full((x.shape[0], maxk), float("-inf"))
            out[ix, : y.shape[1]] = y
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, method={self.method!r}, width={self.width}, domains={self.domains}"


class _DomainCtx:
    """Single-domain forward (optionally with the domain's soft-sharing gate)."""

    def __init__(self, net: MultiDomainNet, domain: str, gate: GateSet | None = None):
        self.net, self.domain, self.gate = net, domain, gate

    def tensor(self, key):
        return self.net._tensor(self.domain, key)

    def conv(self, x, key, stride, padding):
        return F.conv2d(x, self.tensor(key), stride=stride, padding=padding)

    def depthwise(self, x, layer, stride):
        mlp = self.gate.mlp_for(layer) if self.gate is not None else None
        if mlp is None:
            return F.conv2d(x, self.tensor(layer + ".weight"), stride=stride, padding=1, groups=x.shape[1])
        stacked = torch.stack([self.net._tensor(d, layer + ".weight") for d in self.gate.mixed_domains])
        return layers.mixed_depthwise(x, stacked, mlp(x), stride)

    def bn(self, x, name):
        t = {n: self.tensor(f"{name}.{n}") for n in BN_TENSORS}
        training = self.net.training and self.gate is None and self.net.is_domain_key(f"{name}.weight")
        return layers.batch_norm(x, t, training)

    def run(self, x):
        feat = self.net._features(x, self)
        return F.linear(feat, self.tensor("head.weight"), self.tensor("head.bias"))


class _StackedCtx:
    """Mixed-batch eval forward in one pass (paper eq. 7).

    Per-domain tensors are stacked over ALL registered domains ([D, C, 1, 3, 3] depthwise filters,
    [D, C] BN scale/shift) and gathered per sample with ``idx``. Without autograd the stacks are cached
    on the network and rebuilt only when a domain tensor changes (identity or in-place version).
    """

    def __init__(self, net: MultiDomainNet, uniq, names, groups, device):
        self.net, self.groups = net, groups
        self.all = list(net.domain_store)
        pos = {d: i for i, d in enumerate(self.all)}
        self.idx = torch.tensor([pos[n] for n in names], device=device)
        self.cache = net._stack_cache() if not torch.is_grad_enabled() else {}
        self.uniq = uniq

    def _cached(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def _stack(self, key):
        return torch.stack([self.net._tensor(d, key) for d in self.all])

    def conv(self, x, key, stride, padding):
        if not self.net.is_domain_key(key):
            return F.conv2d(x, self.net.shared.get(key), stride=stride, padding=padding)
        out = None
        for d, ix in self.groups:  # per-domain dense conv: grouped by domain
            y = F.conv2d(x.index_select(0, ix), self.net._tensor(d, key), stride=stride, padding=padding)
            if out is None:
                out = torch.empty((x.shape[0],) + y.shape[1:], dtype=y.dtype, device=y.device,
                                  memory_format=_fmt(y))
            out.index_copy_(0, ix, y)
        return out

    def depthwise(self, x, layer, stride):
        key = layer + ".weight"
        if not self.net.is_domain_key(key):
            return F.conv2d(x, self.net.shared.get(key), stride=stride, padding=1, groups=x.shape[1])
        stacked = self._cached(key, lambda: self._stack(key))
        return layers.per_sample_depthwise(x, stacked[self.idx], stride)

    def bn(self, x, name):
        if not self.net.is_domain_key(f"{name}.weight"):
            t = {n: self.net.shared.get(f"{name}.{n}") for n in BN_TENSORS}
            return layers.batch_norm(x, t, False)
        scale, shift = self._cached(name, lambda: layers.bn_scale_shift(
            {n: self._stack(f"{name}.{n}") for n in BN_TENSORS}))
        return layers.per_sample_affine(x, scale[self.idx], shift[self.idx])

    def run(self, x):
        feat = self.net._features(x, self)
        maxk = max(self.net.domains[d] for d in self.uniq)
        out = feat.new_full((x.shape[0], maxk), float("-inf"))
        for d, ix in self.groups:
            st = self.net.domain_store[d]
            out[ix, : st.get("head.bias").shape[0]] = F.linear(
                feat.index_select(0, ix), st.get("head.weight"), st.get("head.bias"))
        return out


def _fmt(y):
    if y.dim() == 4 and not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def create_network(arch: str, method: str = "dw", domains: dict | None = None,
                   width: float = 1.0) -> MultiDomainNet:
    """Build a multi-domain network: ``arch`` in list_trunks(), ``method`` in list_methods(),
    ``domains`` {name: num_classes}, ``width`` channel multiplier (1.0 = the published sizes)."""
    if not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return MultiDomainNet(arch, method, domains, width)
