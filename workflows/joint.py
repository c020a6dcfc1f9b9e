"""`mdl joint-train`: several domains trained together from round-robin batches (Bilen & Vedaldi 2017).

Variants
    bn             domain-specific BN: per domain the norms (scale, bias, statistics) and the head
                   (method ``bn``); the shared trunk weights (every conv) are trained jointly too, as the
                   paper learns its universal network.
    instance-norm  the universal network without domain-specific parameters but the head: every BN of the
                   trunk becomes an instance norm with a shared, trained affine (trunk ``resnet26_in`` /
                   ``resnet26_dw_in``); per domain only the head (method ``classifier-only``).

A jointly trained trunk is not the trunk it started from, and registered trunks are never changed, so
(as `mdl pretrain` does) the result is registered as a new trunk version, its source domain being the
first joint domain (its norms are the templates a later `add-domain` starts from), and every joint domain
as a new version on that trunk. Everything is trained and evaluated before anything is registered.
"""
from __future__ import annotations

from dataclasses import replace

from mdl.core.choices import JOINT_VARIANTS
from mdl.registry.store import DomainVersionRecord, Registry, TrunkRecord, check_name
from mdl.workflows import events
from mdl.workflows.common import data_record, loaders, open_data, trunk_mean_std
from mdl.workflows.events import note
from mdl.workflows.train import (TrainOptions, build_recipe, default_name, held_out_accuracy, recipe_summary,
                                 resolve_recipe)
from mdl.workflows.trunks import learnable_params, pick_trunk

PAPER_JOINT_LR = 0.01  # joint-train's lr under the paper's recipe (trunks trained here), as before


def _names(sources: list[str], names: list[str] | None) -> list[str]:
    if names and len(names) != len(sources):
        raise ValueError(f"--name given {len(names)} times for {len(sources)} data sources; give one per source or none")
    out = [check_name(n) for n in (names or [default_name(s) for s in sources])]
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"domain name used twice: {', '.join(dup)} (name each source with --name)")
    return out


def _base_trunk(reg: Registry, variant: str, trunk: str | None) -> TrunkRecord:
    from mdl.core.nets.trunks.instance_norm import INSTANCE_NORM_OF

    if variant == "bn":
        return pick_trunk(reg, "bn", trunk)
    if trunk:
        record = pick_trunk(reg, "classifier-only", trunk)
    else:  # the newest trunk of a family that has an instance-norm twin
        records = [t for t in reg.trunks() if t.arch in INSTANCE_NORM_OF]
        if not records:
            raise ValueError("the instance-norm variant needs a resnet26 or resnet26_dw trunk "
                             "(e.g. `mdl pretrain --arch resnet26 ...`)")
        record = max(records, key=lambda t: t.created_at)
    if record.arch not in INSTANCE_NORM_OF:
        raise ValueError(f"the instance-norm variant needs a resnet26 or resnet26_dw trunk, not {record.label}")
    return record


def _network(reg: Registry, base: TrunkRecord, variant: str):
    from mdl.workflows.common import NetworkLoader
    from mdl.core import create_network
    from mdl.core.nets.trunks.instance_norm import INSTANCE_NORM_OF, from_bn_state

    loader = NetworkLoader(reg)
    if variant == "bn":
        return loader.network(base, "bn")
    net = create_network(INSTANCE_NORM_OF[base.arch], method="classifier-only", domains={}, width=base.width)
    net.load_trunk_state_dict(from_bn_state(loader.trunk_tensors(base)))
    return net


def joint_train(reg: Registry, sources: list[str], *, names: list[str] | None, variant: str, trunk: str | None,
                opts: TrainOptions, rounds: int | None = None) -> tuple[TrunkRecord, list[DomainVersionRecord]]:
    import torch

    from mdl.core.joint import fit_joint, joint_parameters
    from mdl.core.recipes import DEFAULT_WEIGHT_DECAY
    from mdl.core.training import DeviceSetup

    if variant not in JOINT_VARIANTS:
        raise ValueError(f"unknown --variant {variant!r}: choose {' or '.join(JOINT_VARIANTS)}")
    if len(sources) < 2:
        raise ValueError(f"joint training needs at least 2 data sources, got {len(sources)}")
    names = _names(sources, names)
    reg.check_writable()
    base = _base_trunk(reg, variant, trunk)
    method = JOINT_VARIANTS[variant]
    image_size = base.config["image_size"]
    data = {n: open_data(s, n, image_size=image_size, on_bad_image=opts.on_bad_image, seed=opts.seed,
                         mean_std=trunk_mean_std(base)) for n, s in zip(names, sources)}
    torch.manual_seed(opts.seed)
    net = _network(reg, base, variant)
    for n, dd in data.items():
        net.add_domain(n, dd.num_classes)
    # one weight decay for the whole joint network (the shared weights see every domain)
    # As add-domain: the transfer recipe on a trunk pretrained elsewhere (measured for joint training too,
    # bench/RESULTS.md T5: 56.1 vs 38.4 mean val), the paper's on trunks trained here, at joint-train's own
    # lr 0.01 unless --lr says otherwise
    published, why = resolve_recipe(opts, base.config)
    if published.name == "mdl" and opts.lr is None:
        opts = replace(opts, lr=PAPER_JOINT_LR)
    recipe = build_recipe(opts, opts.weight_decay if opts.weight_decay is not None else DEFAULT_WEIGHT_DECAY, published)
    dev = DeviceSetup.resolve(opts.device)
    dev.prepare(net)
    train, val = {}, {}
    for i, (n, dd) in enumerate(data.items()):
        train[n], val[n] = loaders(dd, recipe.batch_size, opts.workers, opts.seed + i)
    params = joint_parameters(net, names)

    def snapshot():
        return {f"shared/{k}": v for k, v in net.shared_state_dict().items()} | \
            {f"{n}/{k}": v for n in names for k, v in net.domain_state_dict(n).items()}

    def restore(t):
        net.load_shared_state_dict({k[7:]: v for k, v in t.items() if k.startswith("shared/")})
        for n in names:
            net.load_domain_state_dict(n, {k[len(n) + 1:]: v for k, v in t.items() if k.startswith(n + "/")})

    note(f"Recipe {recipe.name} ({why}): {recipe_summary(recipe)}")
    note(f"Joint training ({variant}) of {', '.join(names)} from trunk {base.label}: "
         + ", ".join(f"{n} {len(dd.splits['train'])} train" for n, dd in data.items()))
    with events.task("joint") as bar:
        result = fit_joint(net, params, train, val, recipe, dev, snapshot=snapshot, restore=restore,
                           rounds=rounds, progress=bar)
    tests = {n: held_out_accuracy(net, dd, opts, dev, domain=n) for n, dd in data.items()}
    net.cpu()
    arch = net.arch
    trunk_tensors = net.trunk_state_dict(names[0] if variant == "bn" else None)
    trunk_params = learnable_params(trunk_tensors)
    joint = {"variant": variant, "domains": names, "based_on": base.label, "sampler": "round-robin, one step per batch",
             "rounds_per_epoch": rounds or max(len(dl) for dl in train.values()),
             "val_mean_accuracy": result.best_mean_accuracy}
    config = {"image_size": image_size, "crop": data[names[0]].crop, "recipe": recipe.to_dict(), "recipe_reason": why,
              "history": result.history, "best_epoch": result.best_epoch, "joint": joint,
              "train_images_per_s": result.images_per_s, "device": str(dev.device)}
    if "pretrained_cfg" in base.config:  # a pretrained trunk's preprocessing carries over
        config["pretrained_cfg"] = base.config["pretrained_cfg"]
    records = {n: data_record(dd, s, opts.seed) for (n, dd), s in zip(data.items(), sources)}
    new_trunk = reg.add_trunk(arch=arch, width=base.width, source=names[0], num_params=trunk_params, config=config,
                              tensors=trunk_tensors, provenance={"source": f"joint training ({variant}) from {base.label}",
                                                                 **{k: v for k, v in base.provenance.items()
                                                                    if k in ("library", "library_version", "model_name")}})
    versions, own = [], net.parameter_counts()["domains"]
    for n, dd in data.items():
        versions.append(reg.add_domain_version(
            name=n, method=method, num_classes=dd.num_classes, domain_params=own[n],
            accuracy=result.best_accuracy[n], trunk_id=new_trunk.id, classes=list(dd.classes), data=records[n],
            config={"joint": joint, "recipe": recipe.to_dict(), "history": result.history,
                    "best_epoch": result.best_epoch, "test_accuracy": tests[n], "device": str(dev.device)},
            tensors=net.domain_state_dict(n)))
    return new_trunk, versions
