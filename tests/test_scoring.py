"""The decathlon score with the official constants reproduces the paper's Table 2 totals."""
from __future__ import annotations

import pytest

from mdl.core.scoring import decathlon_facts, domain_score, score_domains


def table2(method: str) -> dict[str, float]:
    table = decathlon_facts()["paper_table2_accuracy"]
    return dict(zip(table["_order"], table[method]))


@pytest.mark.parametrize("method, total", [("dw_proposed", 3507), ("parallel_adapters", 3412)])
def test_paper_table2_totals(method, total):
    score, domains = score_domains(table2(method))
    assert round(score) == total
    assert len(domains) == 10 and all(d.score is not None for d in domains)


def test_score_anchors():
    assert domain_score(100.0, 60.0) == pytest.approx(1000.0)
    assert domain_score(60.0, 60.0) == pytest.approx(250.0)
    assert domain_score(20.0, 60.0) == 0.0  # twice the baseline error
    assert domain_score(0.0, 60.0) == 0.0  # clipped, never negative


def test_custom_domains_use_recorded_reference_or_stay_unscored():
    total, domains = score_domains({"svhn": 96.55, "mine": 80.0, "other": 50.0}, references={"mine": 80.0})
    by_name = {d.name: d for d in domains}
    assert by_name["svhn"].score == pytest.approx(250.0)
    assert by_name["mine"].score == pytest.approx(250.0) and by_name["mine"].reason == "recorded reference"
    assert by_name["other"].score is None and "no reference" in by_name["other"].reason
    assert total == pytest.approx(500.0)


def test_rejects_accuracy_outside_percent():
    with pytest.raises(ValueError, match="percentages"):
        domain_score(0.95 * 1000, 60.0)
