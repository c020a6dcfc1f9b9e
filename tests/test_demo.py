"""`mdl demo`'s orchestration at toy size: the ImageNet Lite0 trunk imported (no pretraining), every
builtin target registered (finetune reference, then dw as current), gates, a score; a second run reuses
the registry and trains nothing. The own-family path (pretrain resnet26_dw on the source) still works."""
from __future__ import annotations

import pytest

from mdl.workflows.demo import DemoPlan, run
from mdl.core.data import list_builtin
from mdl.registry.store import Registry

TOY = DemoPlan(image_size=16, data_scale=0.03, domain_epochs=1, reference_epochs=1, gate_epochs=1, batch_size=32)
TOY_OWN = DemoPlan(trunk="resnet26_dw", width=0.0625, image_size=16, data_scale=0.03, pretrain_epochs=1,
                   domain_epochs=1, reference_epochs=0, gate_epochs=0, batch_size=32)


@pytest.fixture
def small_builtins(monkeypatch):
    monkeypatch.setenv("MDL_BUILTIN_SCALE", "0.03")


def test_demo_runs_then_reuses(tmp_path):
    home = tmp_path / "demo"
    first = run(home, device="cpu", plan=TOY)
    targets = [n for n in list_builtin() if n != TOY.source]
    reg = Registry.open(home)
    assert [t.label for t in reg.trunks()] == ["timm/tf_efficientnet_lite0:v1"]
    current = {v.name: v for v in reg.current_versions()}
    assert set(current) == {"imagenet", *targets}  # the imported classifier is the trunk's source domain
    assert {v.data["source"] for n, v in current.items() if n != "imagenet"} == \
        {f"builtin:{n}?scale=0.03" for n in targets}
    for name in targets:
        assert [v.method for v in reg.domain_versions(name)] == ["finetune", "dw"]
        assert current[name].method == "dw" and current[name].reference_accuracy is not None
        assert reg.current_gate(current[name].id) is not None
    assert reg.current_gate(current["imagenet"].id) is None  # the trunk's own source domain is not gated
    report = first["score"]
    # scored on test (the gates were chosen on val), against each reference run's own test accuracy
    assert report["split"] == "test"
    baselines = {d["name"]: d["baseline"] for d in report["domains"]}
    for name in targets:
        ref = next(v for v in reg.domain_versions(name) if v.method == "finetune")
        assert baselines[name] == pytest.approx(ref.config["test_accuracy"])
    assert {d["name"] for d in report["domains"]} == set(current)
    assert all(d["score"] is not None for d in report["domains"] if d["name"] in targets)
    assert report["total"] == pytest.approx(sum(d["score"] for d in report["domains"] if d["score"] is not None))

    versions_before = [(v.name, v.version) for v in reg.current_versions()]
    second = run(home, device="cpu", plan=TOY)
    assert [(v.name, v.version) for v in Registry.open(home).current_versions()] == versions_before
    assert second["seconds"] < first["seconds"]


def test_demo_with_an_own_family_pretrains_it_first(tmp_path, small_builtins):
    home = tmp_path / "demo"
    run(home, device="cpu", plan=TOY_OWN)
    reg = Registry.open(home)
    assert [t.label for t in reg.trunks()] == ["resnet26_dw:v1"]
    assert {v.name: v.method for v in reg.current_versions()}["digits"] == "dw"
