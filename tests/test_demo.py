"""`mdl demo`'s orchestration at toy size: every builtin target registered (finetune reference, then dw
as current), gates, a score; a second run reuses the registry and trains nothing."""
from __future__ import annotations

import pytest

from cli.jobs.demo import DemoPlan, run
from mdl_core.data import list_builtin
from registry.store import Registry

TOY = DemoPlan(width=0.0625, image_size=16, pretrain_epochs=1, domain_epochs=1, reference_epochs=1, gate_epochs=1,
               batch_size=32)


@pytest.fixture
def small_builtins(monkeypatch):
    monkeypatch.setenv("MDL_BUILTIN_SCALE", "0.03")


def test_demo_runs_then_reuses(tmp_path, small_builtins):
    home = tmp_path / "demo"
    first = run(home, device="cpu", plan=TOY)
    targets = [n for n in list_builtin() if n != TOY.source]
    reg = Registry.open(home)
    current = {v.name: v for v in reg.current_versions()}
    assert set(current) == {TOY.source, *targets}
    for name in targets:
        assert [v.method for v in reg.domain_versions(name)] == ["finetune", "dw"]
        assert current[name].method == "dw" and current[name].reference_accuracy is not None
        assert reg.current_gate(current[name].id) is not None
    assert reg.current_gate(current[TOY.source].id) is None  # the trunk's own source domain is not gated
    report = first["score"]
    assert {d["name"] for d in report["domains"]} == set(current)
    assert all(d["score"] is not None for d in report["domains"] if d["name"] in targets)
    assert report["total"] == pytest.approx(sum(d["score"] for d in report["domains"] if d["score"] is not None))

    versions_before = [(v.name, v.version) for v in reg.current_versions()]
    second = run(home, device="cpu", plan=TOY)
    assert [(v.name, v.version) for v in Registry.open(home).current_versions()] == versions_before
    assert second["seconds"] < first["seconds"]
