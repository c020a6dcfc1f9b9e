"""Soft-sharing gate (Guo et al. 2019, eq. 8-9), one GateSet per target domain.

At every gated depthwise layer the outputs of the T mixed domains' depthwise filters are mixed:
    out = sum_t s_t * DW_t(x),   s = softmax(fc2(relu(fc1(GAP(x)))))   (s in R^T, one per sample)
Placement: early / middle / late = the trunk's depthwise layers in thirds by depth (a trunk may say
otherwise: ``resnet26_dw`` uses its three stages, paper Table 3), or all of them. Only the gate MLPs
train; every filter, norm (running statistics used, never updated) and the head stay frozen. The
GateSet records its placement and the ordered list of mixed domains (meta).
Hidden width of each MLP: max(4, C_in // 4).
"""
from __future__ import annotations

import torch
from torch import nn

from mdl.core.choices import GATE_SCOPES as SCOPES
from mdl.core.choices import PLACEMENTS


def thirds(paths: list[str]) -> dict[str, list[str]]:
    n = len(paths)
    a, b = round(n / 3), round(2 * n / 3)
    return {"early": paths[:a], "middle": paths[a:b], "late": paths[b:]}


def gated_paths(trunk: nn.Module, depthwise: list[str], placement: str) -> list[str]:
    """The depthwise layer paths a placement gates, in depth order."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown gate placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    if placement == "all":
        return list(depthwise)
    sections = getattr(trunk, "gate_sections", thirds)(list(depthwise))
    return sections[placement]


class GateMLP(nn.Module):
    def __init__(self, cin: int, num_domains: int):
        super().__init__()
        hidden = max(4, cin // 4)
        self.fc1 = nn.Linear(cin, hidden)
        self.fc2 = nn.Linear(hidden, num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] (the layer input) -> mixing weights s [B,T]."""
        return torch.softmax(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))), dim=1)


class GateSet(nn.Module):
    def __init__(self, layers: dict[str, int], placement: str, mixed_domains: list[str], scope: str = "gate"):
        """``layers``: gated depthwise layer path -> its input channels."""
        super().__init__()
        if scope not in SCOPES:
            raise ValueError(f"unknown gate scope {scope!r}; valid: {', '.join(SCOPES)}")
        self.placement, self.scope = placement, scope
        self.mixed_domains = list(mixed_domains)
        self.mlps = nn.ModuleDict({k.replace(".", "__"): GateMLP(c, len(self.mixed_domains))
                                   for k, c in layers.items()})

    def mlp_for(self, layer: str):
        name = layer.replace(".", "__")
        return self.mlps[name] if name in self.mlps else None

    def meta(self) -> dict:
        return {"placement": self.placement, "mixed_domains": list(self.mixed_domains)}

    def flat_state(self) -> dict[str, torch.Tensor]:
        return {k.replace("__", "."): v for k, v in self.mlps.state_dict(keep_vars=True).items()}
