"""`mdl pretrain` and `mdl add-domain`: train, keep the best validation epoch, register."""
from __future__ import annotations

import math
from dataclasses import dataclass

from mdl.core import distributed
from mdl.registry.store import DomainVersionRecord, Registry, TrunkRecord, check_name
from mdl.workflows import events
from mdl.workflows.common import NetworkLoader, data_record, loaders, open_data, run_key, trunk_mean_std
from mdl.workflows.events import note
from mdl.workflows.trunks import learnable_params, pick_trunk, source_method


@dataclass
class TrainOptions:
    """What a user can set; None means the recipe's value (recipes.PUBLISHED_RECIPES)."""

    epochs: int
    lr: float | None = None         # the copied tensors' lr (None: the recipe's)
    batch_size: int = 64
    weight_decay: float | None = None  # None: the recipe's default for the domain
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    on_bad_image: str = "fail"
    resume: bool = False
    recipe: str = "auto"            # auto (by the trunk's kind) or a recipe of recipes.PUBLISHED_RECIPES
    wd_groups: str | None = None    # None: the recipe's
    train_on: str = "train"         # "train+val": fixed epochs, no validation (a test submission)
    head_lr: float | None = None    # the new tensors' lr (head, adapters)
    optimizer: str | None = None
    schedule: str | None = None
    bn_stats: str | None = None
    probe_epochs: int | None = None
    train_images: int | None = None  # a seeded, stratified subset of the training split
    val_images: int | None = None
    image_size: int | None = None    # add-domain: shorter side (crop 64/72 of it); None: the trunk's


def build_recipe(opts: TrainOptions, weight_decay: float, published, **extra):
    """The run's Recipe: the published recipe's defaults, each overridden by the option a user set."""
    from mdl.core.recipes import Recipe

    def pick(option, default):
        return default if option is None else option
    lr = pick(opts.lr, published.lr)
    return Recipe(epochs=opts.epochs, lr=lr, head_lr=pick(opts.head_lr, lr * published.head_lr_scale),
                  batch_size=opts.batch_size, weight_decay=weight_decay, seed=opts.seed, train_on=opts.train_on,
                  name=published.name, optimizer=pick(opts.optimizer, published.optimizer),
                  schedule=pick(opts.schedule, published.schedule), bn_stats=pick(opts.bn_stats, published.bn_stats),
                  probe_epochs=pick(opts.probe_epochs, published.probe_epochs), **extra)


def resolve_recipe(opts: TrainOptions, trunk_config: dict | None):
    """(published recipe, why): the named one, or for ``auto`` the one the trunk's kind calls for."""
    from mdl.core.recipes import AUTO, published_recipe, recipe_for_trunk

    if opts.recipe != AUTO:
        return published_recipe(opts.recipe), "--recipe given"
    name, why = recipe_for_trunk(trunk_config or {})
    return published_recipe(name), why


def held_out_accuracy(net, dd, opts, dev, **forward_kw) -> float | None:
    from mdl.core.data import make_loader
    from mdl.core.training import accuracy

    if "test" not in dd.splits or len(dd.splits["test"]) == 0:
        return None
    loader = distributed.eval_loader(make_loader(dd, "test", 256, train=False, workers=opts.workers))
    acc, n = accuracy(net, loader, dev, **forward_kw)
    return None if n == 0 or math.isnan(acc) else acc


def _checkpoint(reg: Registry, name: str, key: dict, resume: bool):
    """The run folder for these settings; checked before any work so a bad --resume fails fast."""
    from mdl.core.training import Checkpoint

    digest, key = run_key(**key)
    checkpoint = Checkpoint(reg.home / "runs" / f"{key['job']}-{name}-{digest}", key)
    if resume and not checkpoint.exists():
        raise ValueError(f"nothing to resume for {name}: no checkpoint of an unfinished run with these settings")
    if not resume and checkpoint.exists():
        note("an unfinished run with these settings exists; starting over (use --resume to continue it)", "note")
    return checkpoint


def recipe_summary(recipe) -> str:
    """One line: what the run's recipe does."""
    sched = "cosine" if recipe.schedule == "cosine" else "x{:g} at epochs {}".format(recipe.gamma, recipe.milestones() or "-")
    probe = f", head only for {recipe.probe_epochs} epoch(s) first" if recipe.probe_epochs else ""
    return (f"{recipe.optimizer} lr {recipe.lr:g} (new head/adapters {recipe.head_lr:g}), {sched} schedule"
            f"{' after a 1-epoch warm-up' if recipe.warmup else ''}, BN statistics {recipe.bn_stats}, "
            f"wd {recipe.weight_decay:g} ({recipe.wd_groups} groups), dropout {recipe.dropout:g}{probe}")


def _fit(net, params, dd, opts: TrainOptions, recipe, checkpoint, *, snapshot, restore, forward_kw, norms=None):
    import torch

    from mdl.core.training import DeviceSetup, fit

    dev = DeviceSetup.resolve(opts.device)
    dev.prepare(net)
    train_loader, val_loader = loaders(dd, recipe.batch_size, opts.workers, opts.seed, train_on=recipe.train_on)
    # under torchrun: DistributedSamplers, batch_size / world_size per rank; each rank its own augmentation
    train_loader, val_loader = distributed.shard_loaders(train_loader, val_loader, recipe.seed)
    torch.manual_seed(opts.seed + distributed.rank())
    with events.task("train") as bar:
        result = fit(net, params, train_loader, val_loader, recipe, dev, snapshot=snapshot, restore=restore,
                     forward_kw=forward_kw, checkpoint=checkpoint, resume=opts.resume, progress=bar, norms=norms)
    return result, dev


def pretrain(reg: Registry, src: str, *, name: str | None, arch: str, width: float, image_size: int,
             opts: TrainOptions) -> tuple[TrunkRecord, DomainVersionRecord] | None:
    """Train the whole network on the source domain; register the trunk and the source as its first domain.
    Under torchrun only rank 0 registers; the other ranks return None."""
    import torch

    from mdl.core import create_network

    name = check_name(name or default_name(src))
    reg.check_writable()
    method = source_method(arch, width)
    dd = open_data(src, name, image_size=image_size, on_bad_image=opts.on_bad_image, seed=opts.seed,
                   train_images=opts.train_images, val_images=opts.val_images)
    torch.manual_seed(opts.seed)
    net = create_network(arch, method="finetune", domains={name: dd.num_classes}, width=width)

    def params():
        return [p.requires_grad_(True) for p in net.parameters()]
    published, _ = resolve_recipe(opts, None)  # trained from scratch here: the papers' recipe
    recipe = build_recipe(opts, opts.weight_decay if opts.weight_decay is not None else 1e-4, published)
    record = data_record(dd, src, opts.seed, opts.train_images, opts.val_images)
    key = {"job": "pretrain", "src": record["fingerprint"], "arch": arch, "width": width,
           "image_size": image_size, "recipe": recipe.to_dict()}
    checkpoint = _checkpoint(reg, name, key, opts.resume)
    note(f"Pretraining {arch} (width {width:g}) on {name}: {dd.num_classes} classes, "
         f"{len(dd.splits['train'])} train / {len(dd.splits['val'])} val images at {image_size}px")
    result, dev = _fit(
        net, params, dd, opts, recipe, checkpoint,
        snapshot=net.state_dict, restore=net.load_state_dict, forward_kw={"domain": name})
    test_acc = held_out_accuracy(net, dd, opts, dev, domain=name)
    distributed.all_ok()  # every rank finished: only then does rank 0 register
    if not distributed.is_main():
        return None
    net.cpu()
    trunk_tensors = net.trunk_state_dict(name)
    head = {k: v for k, v in net.domain_state_dict(name).items() if k.startswith("head.")}
    trunk_params = learnable_params(trunk_tensors)
    config = {"image_size": dd.image_size, "crop": dd.crop, "recipe": recipe.to_dict(), "history": result.history,
              "best_epoch": result.best_epoch, "val_accuracy": result.best_accuracy, "device": str(dev.device),
              "train_images_per_s": result.images_per_s, "data": record,
              "distributed": distributed.describe(recipe.batch_size)}
    trunk = reg.add_trunk(arch=arch, width=width, source=name, num_params=trunk_params,
                          config=config, tensors=trunk_tensors)

    # The source domain, re-expressed as the trunk's own adapter (its per-domain tensors plus the head).
    loader = NetworkLoader(reg)
    src_net = loader.network(trunk, method)
    src_net.add_domain(name, dd.num_classes)
    src_net.load_domain_state_dict(name, src_net.domain_state_dict(name) | head)
    version = reg.add_domain_version(
        name=name, method=method, num_classes=dd.num_classes, domain_params=src_net.parameter_counts()["domains"][name],
        accuracy=result.best_accuracy, trunk_id=trunk.id, classes=list(dd.classes), data=record,
        config={"recipe": recipe.to_dict(), "history": result.history, "best_epoch": result.best_epoch,
                "role": "trunk source", "test_accuracy": test_acc},
        tensors=src_net.domain_state_dict(name))
    checkpoint.discard()
    return trunk, version


def add_domain(reg: Registry, name: str, src: str, *, method: str, trunk: str | None,
               opts: TrainOptions, source_domain: str | None = None) -> DomainVersionRecord | None:
    """Train `name`'s own tensors against the frozen trunk and register them as a new version (rank 0
    only under torchrun; the other ranks return None).
    `source_domain`: which domain of `src` to read (a decathlon folder holds ten; default: `name`)."""
    from mdl.core.recipes import (AUTO, PUBLISHED_RECIPES, REBUFFI_DECAY_OTHER, lr_groups, published_recipe,
                                  weight_decay_groups)

    check_name(name)
    # bad options fail before any data is read or a trunk imported, under whichever recipe auto will pick
    for candidate in (PUBLISHED_RECIPES if opts.recipe == AUTO else (opts.recipe,)):
        build_recipe(opts, 0.0, published_recipe(candidate), wd_groups=opts.wd_groups or "guo")
    reg.check_writable()
    with distributed.rank_zero_first():  # a fresh registry's default trunk is imported once, by rank 0
        trunk_rec = pick_trunk(reg, method, trunk)
    published, why = resolve_recipe(opts, trunk_rec.config)
    wd_groups = opts.wd_groups or published.wd_groups
    # a pretrained trunk's weights expect its own normalisation; a trunk pretrained here, the data's
    dd = open_data(src, source_domain or name, image_size=opts.image_size or trunk_rec.config["image_size"],
                   on_bad_image=opts.on_bad_image,
                   seed=opts.seed, mean_std=trunk_mean_std(trunk_rec), train_images=opts.train_images,
                   val_images=opts.val_images)
    if published.preprocessing == "reference" and not dd.flip:  # the references feed these domains whole
        dd = dd.with_crop(dd.image_size)
    import torch

    torch.manual_seed(opts.seed)  # the new head's initialisation
    net = NetworkLoader(reg).network(trunk_rec, method)
    net.add_domain(name, dd.num_classes)
    if opts.weight_decay is not None:
        wd = opts.weight_decay
    elif wd_groups == "rebuffi":  # their --wd: the classifier's and the norms' decay
        wd = REBUFFI_DECAY_OTHER
    else:
        wd = published.domain_weight_decay(dd.name, len(dd.splits["train"]))
    recipe = build_recipe(opts, wd, published, wd_groups=wd_groups, dropout=published.dropout.get(dd.name, 0.0))
    net.set_head_dropout(name, recipe.dropout)
    record = data_record(dd, src, opts.seed, opts.train_images, opts.val_images)
    key = {"job": "add-domain", "name": name, "method": method, "trunk": trunk_rec.id, "data": record["fingerprint"],
           "recipe": recipe.to_dict()}
    checkpoint = _checkpoint(reg, name, key, opts.resume)
    note(f"Adding {name} ({method}) on trunk {trunk_rec.label}: {dd.num_classes} classes, "
         f"{len(dd.splits['train'])} train / {len(dd.splits['val'])} val images, trained on {recipe.train_on}, "
         f"{dd.crop}px inputs")
    note(f"Recipe {recipe.name} ({why}): {recipe_summary(recipe)}")

    def params():
        return lr_groups(weight_decay_groups(net.set_trainable(name), wd_groups, wd), net.new_parameters(name), recipe)
    result, dev = _fit(
        net, params, dd, opts, recipe, checkpoint,
        snapshot=lambda: net.domain_state_dict(name), norms=lambda: net.domain_batchnorms(name),
        restore=lambda t: net.load_domain_state_dict(name, t), forward_kw={"domain": name})
    test_acc = held_out_accuracy(net, dd, opts, dev, domain=name)
    distributed.all_ok()  # every rank finished: only then does rank 0 register
    if not distributed.is_main():
        return None
    net.cpu()
    val_acc = None if math.isnan(result.best_accuracy) else result.best_accuracy  # NaN: val was trained on
    version = reg.add_domain_version(
        name=name, method=method, num_classes=dd.num_classes, domain_params=net.parameter_counts()["domains"][name],
        accuracy=val_acc, trunk_id=trunk_rec.id, classes=list(dd.classes), data=record,
        config={"recipe": recipe.to_dict(), "recipe_reason": why, "history": result.history,
                "best_epoch": result.best_epoch, "trained_on": recipe.train_on, "test_accuracy": test_acc, "train_images_per_s": result.images_per_s,
                "device": str(dev.device), "resumed_from_epoch": result.resumed_from,
                "distributed": distributed.describe(recipe.batch_size)},
        tensors=net.domain_state_dict(name),
        # An individually fine-tuned network is what the official decathlon baselines are: record it as the
        # domain's reference so `mdl score` can score custom domains.
        reference_accuracy=val_acc if method == "finetune" else None)
    checkpoint.discard()
    if version.pinned_version is not None:
        note(f"{name} is pinned to v{version.pinned_version}: the new v{version.version} is registered but not "
             f"current (`mdl promote {name} --version {version.version}`, or `--latest`)")
    return version


def default_name(src: str) -> str:
    from pathlib import Path

    if src.startswith("builtin:"):
        from mdl.core.data.sources import parse_builtin

        return parse_builtin(src)[0]
    return Path(src).expanduser().resolve().name.lower().replace(".", "-")
