"""`mdl gate-train`: a soft-sharing gate per target domain over every registered `dw` domain of its
trunk (paper eq. 8-9). Filters stay frozen. Scope ``gate`` (the paper's text): only the gate MLPs train.
Scope ``gate+domain`` (the released code): the target's norms, last pointwise conv, end BN and head
train with it, so the run registers a new version of the target domain and the gate on that version."""
from __future__ import annotations

from dataclasses import dataclass

from mdl.workflows import events
from mdl.workflows.events import note
from mdl.workflows.common import NetworkLoader, loaders, open_version_data, run_key
from mdl.core import distributed
from mdl.registry.store import DomainVersionRecord, GateRecord, Registry



def gateable(method: str) -> bool:
    """Whether domains of ``method`` can be gated: the gate mixes depthwise outputs, so every mixed domain
    must own its depthwise filters (the method says so: ``Method.gateable``)."""
    from mdl.core.nets import get_method

    return get_method(method).gateable


@dataclass
class GateOptions:
    placement: str = "all"
    epochs: int = 10  # the paper's
    lr: float = 0.1
    batch_size: int = 64
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    scope: str = "gate"  # mdl.core.nets.gate.SCOPES


def gateable_methods() -> list[str]:
    from mdl.core.nets import list_methods

    return [m for m in list_methods() if gateable(m)]


def gate_targets(reg: Registry, names: list[str] | None) -> list[DomainVersionRecord]:
    """The named domains, or by default every current domain of a gateable method (`dw`) added to a trunk
    (not the trunks' own source domains: the paper gates the domains added later)."""
    current = [v for v in reg.current_versions() if gateable(v.method)]
    if not names:
        return [v for v in current if v.config.get("role") != "trunk source"]
    by_name = {v.name: v for v in current}
    for n in names:
        if n not in by_name:
            reg.domain_version(n)  # unknown domain -> NotFound with a hint
            raise ValueError(f"domain {n!r} is not a current domain of a gateable method ({', '.join(gateable_methods())}); "
                             "gates mix depthwise filters")
    return [by_name[n] for n in names]


def train_gate(reg: Registry, target: DomainVersionRecord, opts: GateOptions) -> GateRecord | None:
    """Train and register `target`'s gate (under torchrun rank 0 registers; the other ranks return None)."""
    import torch

    from mdl.core.recipes import Recipe
    from mdl.core.training import Checkpoint, DeviceSetup, accuracy, fit

    mixed = [v for v in reg.current_versions() if v.method == target.method and v.trunk.id == target.trunk.id]
    if len(mixed) < 2:
        raise ValueError(f"a gate for {target.name} needs at least 2 registered {target.method} domains on trunk "
                         f"{target.trunk.label}; found {len(mixed)}")
    loader = NetworkLoader(reg)
    torch.manual_seed(opts.seed)
    net = loader.network(target.trunk, target.method, mixed)
    net.add_gate(target.name, placement=opts.placement, mixed_domains=[v.name for v in mixed], scope=opts.scope)
    trains_domain = opts.scope == "gate+domain"
    dd = open_version_data(target)
    recipe = Recipe(epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size, weight_decay=1e-4,
                    decay_at=(0.5,), seed=opts.seed)  # the paper: 10 epochs, one decay
    dev = DeviceSetup.resolve(opts.device)
    dev.prepare(net)
    train_loader, val_loader = loaders(dd, recipe.batch_size, opts.workers, opts.seed)
    train_loader, val_loader = distributed.shard_loaders(train_loader, val_loader, recipe.seed)  # torchrun only
    base_acc, _ = accuracy(net, val_loader, dev, domain=target.name, use_gate=False)
    digest, key = run_key(job="gate", target=target.id, mixed=[v.id for v in mixed], placement=opts.placement,
                          recipe=recipe.to_dict(), scope=opts.scope)
    checkpoint = Checkpoint(reg.home / "runs" / f"gate-{target.name}-{digest}", key)
    note(f"Gate for {target.name} v{target.version} ({opts.placement}, scope {opts.scope}) over {len(mixed)} "
         f"domains: {', '.join(v.name for v in mixed)}")
    names = [v.name for v in mixed]

    def snapshot():
        gate = {f"gate/{k}": t for k, t in net.gate_state_dict(target.name).items()}
        return gate | ({f"own/{k}": t for k, t in net.domain_state_dict(target.name).items()} if trains_domain else {})

    def restore(t):
        net.load_gate_state_dict(target.name, {k[5:]: v for k, v in t.items() if k.startswith("gate/")}, names,
                                 opts.placement, opts.scope)
        if trains_domain:
            net.load_domain_state_dict(target.name, {k[4:]: v for k, v in t.items() if k.startswith("own/")})
    with events.task("train") as bar:
        result = fit(net, lambda: net.set_trainable_gate(target.name), train_loader, val_loader, recipe, dev,
                     snapshot=snapshot, restore=restore,
                     forward_kw={"domain": target.name, "use_gate": True}, checkpoint=checkpoint, progress=bar,
                     # scope gate: frozen BN statistics, nothing but the gate may change
                     train_mode=net.train if trains_domain else net.eval)
    if trains_domain:  # the target's tensors changed: they are a new version, the gate belongs to it
        base_acc, _ = accuracy(net, val_loader, dev, domain=target.name, use_gate=False)
    distributed.all_ok()  # every rank finished: only then does rank 0 register
    if not distributed.is_main():
        return None
    net.cpu()
    if trains_domain:
        target = reg.add_domain_version(
            name=target.name, method=target.method, num_classes=target.num_classes,
            domain_params=net.parameter_counts()["domains"][target.name], accuracy=base_acc,
            trunk_id=target.trunk.id, classes=list(target.classes), data=target.data,
            config={"recipe": recipe.to_dict(), "history": result.history, "best_epoch": result.best_epoch,
                    "trained_with_gate": {"scope": opts.scope, "placement": opts.placement, "from_version": target.version},
                    "trained_on": target.config.get("trained_on", "train")},
            tensors=net.domain_state_dict(target.name))
        mixed = [target if v.name == target.name else v for v in mixed]
    gate = reg.add_gate(target_id=target.id, placement=opts.placement, mixed=[v.id for v in mixed],
                        accuracy=result.best_accuracy, base_accuracy=base_acc,
                        config={"recipe": recipe.to_dict(), "history": result.history, "best_epoch": result.best_epoch,
                                "mixed_names": [v.name for v in mixed], "scope": opts.scope,
                                "distributed": distributed.describe(recipe.batch_size)},
                        tensors=net.gate_state_dict(target.name))
    checkpoint.discard()
    return gate


def train_gates(reg: Registry, names: list[str] | None, opts: GateOptions) -> list[GateRecord | None]:
    """`mdl gate-train`: a gate for each target (gate_targets) in turn."""
    return [train_gate(reg, t, opts) for t in gate_targets(reg, names)]


def gated_network(reg: Registry, gate: GateRecord, loader: NetworkLoader | None = None):
    """The target's network with its gate and the exact domain versions the gate was trained over."""
    loader = loader or NetworkLoader(reg)
    target = gate.target
    versions = {v.id: v for name in gate.config["mixed_names"] for v in reg.domain_versions(name)}
    mixed = [versions[i] for i in gate.mixed]
    net = loader.network(target.trunk, target.method, mixed)
    net.load_gate_state_dict(target.name, reg.load_tensors(gate.artifact), [v.name for v in mixed], gate.placement)
    return net
