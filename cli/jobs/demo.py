"""`mdl demo`: pretrain on the bundled source domain, add every bundled target domain, train gates,
score. Sized for a few minutes on 2 CPU cores; a second run reuses what the first registered."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cli._output import info
from cli.jobs.evaluate import score
from cli.jobs.gates import GateOptions, gate_targets, train_gate
from cli.jobs.train import TrainOptions, add_domain, pretrain
from registry.store import Registry


@dataclass(frozen=True)
class DemoPlan:
    """Defaults chosen for 2 CPU cores: a quarter-width trunk at 32 px and a few epochs each."""

    source: str = "source"
    arch: str = "resnet26_dw"
    width: float = 0.25
    image_size: int = 32
    pretrain_epochs: int = 5
    domain_epochs: int = 3
    reference_epochs: int = 3  # a `finetune` run per domain (same budget): the reference its decathlon score uses
    gate_epochs: int = 1
    gate_placement: str = "late"
    batch_size: int = 64
    lr: float = 0.1


PLAN = DemoPlan()


def run(home: Path, *, device: str = "auto", workers: int = 0, plan: DemoPlan = PLAN) -> dict:
    from mdl_core.data import list_builtin

    start = time.perf_counter()
    reg, created = Registry.init(home)
    info(f"Demo registry at {reg.home} ({'new' if created else 'reusing what an earlier run registered'})")
    targets = [name for name in list_builtin() if name != plan.source]

    def opts(epochs: int) -> TrainOptions:
        return TrainOptions(epochs=epochs, lr=plan.lr, batch_size=plan.batch_size, device=device, workers=workers)

    if not any(t.arch == plan.arch for t in reg.trunks()):
        pretrain(reg, f"builtin:{plan.source}", name=plan.source, arch=plan.arch, width=plan.width,
                 image_size=plan.image_size, opts=opts(plan.pretrain_epochs))
    known = {v.name for v in reg.current_versions()}
    for name in targets:
        methods = {v.method for v in reg.domain_versions(name) if v.removed_at is None} if name in known else set()
        # finetune first, dw last: the dw adapter is the domain's current version, the finetune run its reference
        if plan.reference_epochs and "finetune" not in methods:
            add_domain(reg, name, f"builtin:{name}", method="finetune", trunk=plan.arch, opts=opts(plan.reference_epochs))
        if "dw" not in methods:
            add_domain(reg, name, f"builtin:{name}", method="dw", trunk=plan.arch, opts=opts(plan.domain_epochs))
    if plan.gate_epochs:
        for v in gate_targets(reg, None):
            if reg.current_gate(v.id) is None:
                train_gate(reg, v, GateOptions(placement=plan.gate_placement, epochs=plan.gate_epochs, lr=plan.lr,
                                               batch_size=plan.batch_size, device=device, workers=workers))
    report = score(reg, split="val", device=device, workers=workers)
    return {"home": str(reg.home), "seconds": time.perf_counter() - start, "score": report}
