"""Every domain's tensors stacked by domain, for mixed eval batches: what the per-sample paths gather.

A mixed eval batch reads, per layer, each sample's own norm affine and (at small batches) its own
depthwise filters; both come from tensors stacked over the domains ([D, ...], in ``order``). Stacking
them at every forward would copy every domain's tensors each time, so a network keeps one
:class:`Stacks` and checks it ONCE per forward (``refresh``): it is emptied when the domain order or
any source tensor's storage or in-place version changed (a training step, ``load_state_dict``, ``.to()``)
or when any module, parameter or buffer was registered anywhere since (``add_domain``, a parameter
replaced by assignment, ``load_state_dict(assign=True)``). The last is a process-wide counter bumped by
torch's global registration hooks: it spares walking every domain's modules at every forward (1.4 ms
of a 15 ms Lite0 forward; the version and storage checks cost 0.2 ms). Stacks are rebuilt lazily, each
the first time a layer asks for it.

The norms' affines are kept as ONE table [D, N] (every per-sample norm's scale and shift side by side)
so that a forward gathers all of its samples' rows with one ``index_select`` and each norm reads a
column view (``affine``) instead of gathering its own [B, C] pair: one call per forward instead of two
per norm layer (measured on Lite0: bench/RESULTS.md M).
"""
from __future__ import annotations

from itertools import chain
from operator import attrgetter
from typing import Callable

import torch
from torch import nn
from torch.nn.modules import module as _module

from .wrappers import NBT

_registrations = [0]  # bumped whenever any module registers a module, parameter or buffer


def _registered(*_):
    _registrations[0] += 1  # returns None: the registration goes on unchanged


for _hook in (_module.register_module_module_registration_hook, _module.register_module_parameter_registration_hook,
              _module.register_module_buffer_registration_hook):
    _hook(_registered)

_version = attrgetter("_version")
_data_ptr = torch.Tensor.data_ptr


class Stacks:
    def __init__(self) -> None:
        self._epoch = -1
        self._order: list[str] = []
        self._tensors: list[torch.Tensor] = []
        self._versions: list[int] = []
        self._ptrs: list[int] = []
        self._values: dict[tuple, object] = {}  # (wrapper path, builder, *args) -> stack
        self._affines: tuple[torch.Tensor, dict[str, tuple[int, int]]] | None = None
        self._norms: list = []
        self._idx: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    def clear(self) -> None:
        """Forget every stack (the network's tensors were replaced wholesale, e.g. by ``.to()``)."""
        self._epoch = -1
        self._tensors, self._values, self._affines = [], {}, None

    # --- once per forward -------------------------------------------------------------------------
    def refresh(self, wrappers: list, norms: list, order: list[str], idx: torch.Tensor, poll: bool = True) -> None:
        """Check the sources of the stacks of ``wrappers`` (their domains' tensors in ``order``) against
        what the stacks were built from; empty them on any change. ``norms`` (a subset of ``wrappers``)
        share the affine table; ``idx`` is this forward's (sorted) sample -> domain position. ``poll``
        False (the network's assume_static): registrations and the order alone are checked, not every
        tensor's version and storage (the walk over them all costs ~0.2 us a tensor, mostly cache misses)."""
        self._idx, self._rows = idx, None
        if self._epoch == _registrations[0] and order == self._order and (not poll or (
                list(map(_version, self._tensors)) == self._versions and list(map(_data_ptr, self._tensors)) == self._ptrs)):
            return
        mods = [w.domains._modules[d] for w in wrappers for d in order]
        self._tensors = [t for m in mods for k, t in chain(m._parameters.items(), m._buffers.items())
                         if t is not None and k != NBT]
        self._versions, self._ptrs = list(map(_version, self._tensors)), list(map(_data_ptr, self._tensors))
        self._epoch, self._order = _registrations[0], list(order)
        self._values.clear()
        self._affines, self._norms = None, list(norms)

    def release(self) -> None:
        """End of a forward: drop this forward's gathered rows (the stacks stay)."""
        self._idx = self._rows = None

    # --- per layer --------------------------------------------------------------------------------
    def get(self, key: tuple, build: Callable[[], object]):
        """The stacked value ``key`` (a wrapper's path, its builder and their arguments), built by
        ``build()`` the first time."""
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = build()
        return value

    def affine(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The norm at ``path``: each sample's (scale, shift) rows, [B, C] views of this forward's one
        gather of the affine table."""
        if self._rows is None:
            if self._affines is None:
                self._affines = self._affine_table()
            self._rows = self._affines[0].index_select(0, self._idx)
        offset, c = self._affines[1][path]
        return self._rows[:, offset:offset + c], self._rows[:, offset + c:offset + 2 * c]

    def _affine_table(self):
        parts, cols, offset = [], {}, 0
        for w in self._norms:
            scale, shift = w.stacked_affine()
            c = scale.shape[1]
            parts += [scale, shift]
            cols[w.path] = (offset, c)
            offset += 2 * c
        return torch.cat(parts, dim=1).contiguous(), cols
