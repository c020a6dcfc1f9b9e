"""TensorStore: a module holding named tensors (parameters and buffers) under canonical dotted keys.

nn.Module attribute names cannot contain dots, so ``s1.b0.dw1.weight`` is stored as
``s1__b0__dw1__weight``; :meth:`get` and :meth:`flat` speak canonical keys only.
"""
from __future__ import annotations

import torch
from torch import nn


def _internal(key: str) -> str:
    return key.replace(".", "__")


def _canonical(name: str) -> str:
    return name.replace("__", ".")


class TensorStore(nn.Module):
    def add(self, key: str, tensor: torch.Tensor, is_param: bool, persistent: bool = True) -> None:
        name = _internal(key)
        if is_param:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor, persistent=persistent)

    def get(self, key: str) -> torch.Tensor:
        return getattr(self, _internal(key))

    def has(self, key: str) -> bool:
        name = _internal(key)
        return name in self._parameters or name in self._buffers

    def keys(self) -> list[str]:
        return [_canonical(n) for n in list(self._parameters) + list(self._buffers)]

    def flat(self) -> dict[str, torch.Tensor]:
        """Canonical key -> tensor (parameters then buffers), no copies."""
        out = {_canonical(n): p for n, p in self._parameters.items()}
        out.update({_canonical(n): b for n, b in self._buffers.items() if b is not None})
        return out

    def params(self) -> list[nn.Parameter]:
        return list(self._parameters.values())

    def num_params(self) -> int:
        return sum(p.numel() for p in self._parameters.values())
