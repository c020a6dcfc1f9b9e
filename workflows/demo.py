"""`mdl demo`: on the ImageNet EfficientNet-Lite0 trunk (imported offline, no pretraining), add every
bundled target domain twice (a `finetune` reference, then the paper's `dw` as the current version),
train soft-sharing gates, score. Sized for a few minutes on 2 CPU cores; a second run reuses what the
first registered. A plan naming one of mdl's own families (``resnet26_dw``) pretrains it on the bundled
source first, as before trunks could be imported."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mdl.workflows.events import note
from mdl.core.choices import DEFAULT_TRUNK
from mdl.workflows.evaluate import score
from mdl.workflows.gates import GateOptions, gate_targets, train_gate
from mdl.workflows.train import TrainOptions, add_domain, pretrain
from mdl.workflows.trunks import import_trunk
from mdl.registry.store import Registry


@dataclass(frozen=True)
class DemoPlan:
    """Defaults for 2 CPU cores, to stay within 10 minutes: Lite0 trains at ~90-130 img/s at 64 px here and
    each target is trained twice (reference and dw), so quarter-size builtin domains (~4.4k training
    images over 7 targets) and 3 epochs per run."""

    trunk: str = DEFAULT_TRUNK
    image_size: int = 72           # shorter side; training crops 64 (the decathlon's 72/64)
    data_scale: float = 0.25       # builtin:NAME?scale=S: the bundled domains at this fraction of their size
    domain_epochs: int = 3
    reference_epochs: int = 3      # a `finetune` run per domain (same budget): the reference its decathlon score uses
    gate_epochs: int = 1
    gate_placement: str = "late"
    batch_size: int = 64
    lr: float | None = None        # the recipe's: transfer on the ImageNet trunk, the paper's on resnet26 families
    gate_lr: float = 0.1
    # own families only (pretrained here on builtin:source first)
    source: str = "source"
    width: float = 0.25
    pretrain_epochs: int = 5


PLAN = DemoPlan()


def run(home: Path, *, device: str = "auto", workers: int = 0, plan: DemoPlan = PLAN) -> dict:
    from mdl.core.data import list_builtin

    start = time.perf_counter()
    reg, created = Registry.init(home)
    note(f"Demo registry at {reg.home} ({'new' if created else 'reusing what an earlier run registered'})")
    targets = [name for name in list_builtin() if name != plan.source]

    def opts(epochs: int) -> TrainOptions:
        return TrainOptions(epochs=epochs, lr=plan.lr, batch_size=plan.batch_size, device=device, workers=workers)

    def src(name: str) -> str:
        return f"builtin:{name}" if plan.data_scale == 1 else f"builtin:{name}?scale={plan.data_scale:g}"

    if not any(t.arch == plan.trunk for t in reg.trunks()):
        if plan.trunk.startswith("timm/"):
            import_trunk(reg, arch=plan.trunk, image_size=plan.image_size)
        else:
            pretrain(reg, src(plan.source), name=plan.source, arch=plan.trunk, width=plan.width,
                     image_size=plan.image_size, opts=opts(plan.pretrain_epochs))
    known = {v.name for v in reg.current_versions()}
    for name in targets:
        methods = {v.method for v in reg.domain_versions(name) if v.removed_at is None} if name in known else set()
        # finetune first, dw last: the dw adapter is the domain's current version, the finetune run its reference
        if plan.reference_epochs and "finetune" not in methods:
            add_domain(reg, name, src(name), method="finetune", trunk=plan.trunk, opts=opts(plan.reference_epochs))
        if "dw" not in methods:
            add_domain(reg, name, src(name), method="dw", trunk=plan.trunk, opts=opts(plan.domain_epochs))
    if plan.gate_epochs:
        for v in gate_targets(reg, None):
            if reg.current_gate(v.id) is None:
                train_gate(reg, v, GateOptions(placement=plan.gate_placement, epochs=plan.gate_epochs, lr=plan.gate_lr,
                                               batch_size=plan.batch_size, device=device, workers=workers))
    # scored on test: the gates were kept or dropped by their validation accuracy, so a validation score
    # would be selection-biased
    report = score(reg, split="test", device=device, workers=workers)
    return {"home": str(reg.home), "seconds": time.perf_counter() - start, "score": report}
