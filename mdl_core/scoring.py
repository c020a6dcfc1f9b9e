"""The Visual Decathlon score (Rebuffi et al. 2017), with the official constants.

S = sum_d alpha_d * max(0, Emax_d - E_d)^gamma, gamma = 2, Emax_d = 2 * E_baseline_d, alpha_d = 1000 / Emax_d^2:
a perfect domain scores 1000, one at the baseline's error 250, one at twice the baseline's error 0.
Errors are fractions; accuracies are given in percent (0-100), as the rest of mdl reports them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@cache
def decathlon_facts() -> dict:
    """The benchmark's official facts (scoring constants, category-id prefixes, data layout)."""
    return json.loads(resources.files("mdl.core").joinpath("decathlon.json").read_text())


def official_baselines() -> dict[str, float]:
    """Baseline accuracy (percent) of each official decathlon domain."""
    return {name: d["baseline_acc"] for name, d in decathlon_facts()["domains"].items()}


def domain_score(accuracy: float, baseline_accuracy: float, gamma: float | None = None) -> float:
    """Score of one domain for an accuracy (percent) against its baseline accuracy (percent)."""
    if not 0.0 <= accuracy <= 100.0 or not 0.0 <= baseline_accuracy < 100.0:
        raise ValueError(f"accuracies are percentages in [0, 100]: got {accuracy} against {baseline_accuracy}")
    gamma = decathlon_facts()["gamma"] if gamma is None else gamma
    e_max = 2.0 * (1.0 - baseline_accuracy / 100.0)
    error = 1.0 - accuracy / 100.0
    return 1000.0 / e_max**gamma * max(0.0, e_max - error) ** gamma


@dataclass(frozen=True)
class ScoredDomain:
    name: str
    accuracy: float
    baseline: float | None  # None: no reference accuracy known, so not scored
    score: float | None
    reason: str = ""


def score_domains(accuracies: dict[str, float], references: dict[str, float] | None = None,
                  official_names: dict[str, str] | None = None) -> tuple[float, list[ScoredDomain]]:
    """Score every domain: official domains use the official baselines (``official_names`` maps a name a
    decathlon domain was registered under to its official one); other domains use `references` (e.g.
    the accuracy of their own `finetune` run) or are left unscored with the reason."""
    baselines = official_baselines()
    references = references or {}
    official_names = official_names or {}
    scored = []
    for name, acc in accuracies.items():
        official = official_names.get(name, name)
        base = baselines.get(official, references.get(name))
        if base is None:
            scored.append(ScoredDomain(name, acc, None, None, "no reference accuracy recorded"))
        else:
            source = "official baseline" if official in baselines else "recorded reference"
            scored.append(ScoredDomain(name, acc, base, domain_score(acc, base), source))
    return sum(d.score for d in scored if d.score is not None), scored
