"""`mdl compress-adapters`: cross-domain SVD compression of registered parallel adapters (Rebuffi et al.
2018 §3.4), each compressed domain fine-tuned and registered as a new version (method
``parallel-adapter-svd``).

Where the shared factor beta lives: in every compressed version's own artifact (a buffer of its
per-domain adapter modules, so the artifact's sha256 covers it and the version loads exactly through
the ordinary path), and the version config names the group: ``svd.group`` is a content id (sha256 of
every layer's beta), with the member versions. Why not one separate shared artifact: the registry has
no artifact kind or table for tensors shared by versions (it would take a migration, and rules for
removing one member, verifying, and loading a member alone); a version that carries its beta stays
self-contained: `mdl verify`, `mdl remove`, `mdl predict` and `mdl score` need nothing new. The price
is disk only (beta stored once per member), never parameters: beta is not counted in a version's
own parameters and the group's accounting counts it once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mdl.workflows import events
from mdl.workflows.events import note
from mdl.workflows.common import NetworkLoader, loaders, open_version_data
from mdl.workflows.train import TrainOptions, build_recipe, held_out_accuracy
from mdl.registry.store import DomainVersionRecord, Registry


@dataclass
class CompressResult:
    versions: list[DomainVersionRecord]
    report: dict       # the group's accounting (mdl.core.compression.CompressionReport.to_dict())
    rows: list[dict]   # per domain: source version, accuracies before / after, own parameters


def compressible(method: str) -> bool:
    """Whether domains of ``method`` can be compressed together (the method says: ``Method.compresses_to``)."""
    from mdl.core.nets import get_method

    return get_method(method).compresses_to is not None


def _sources(reg: Registry, names: list[str] | None) -> list[DomainVersionRecord]:
    from mdl.core.compression import SOURCE_METHOD

    if names:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"domain named twice: {', '.join(dup)}")
        versions = [reg.domain_version(n) for n in names]  # unknown names: NotFound, one line
        wrong = [f"{v.name} v{v.version} ({v.method})" for v in versions if not compressible(v.method)]
        if wrong:
            raise ValueError(f"only {SOURCE_METHOD} versions can be compressed; the current version of "
                             f"{', '.join(wrong)} is not (train one with `mdl add-domain NAME --method {SOURCE_METHOD}`)")
    else:
        versions = [v for v in reg.current_versions() if compressible(v.method)]
    if len(versions) < 2:
        raise ValueError(f"cross-domain compression needs at least 2 {SOURCE_METHOD} domains, "
                         f"got {len(versions)}" + (f" ({', '.join(v.name for v in versions)})" if versions else ""))
    trunks = {v.trunk.label for v in versions}
    if len(trunks) > 1:
        raise ValueError(f"the domains use different trunks ({', '.join(sorted(trunks))}); "
                         "compress the domains of one trunk at a time")
    return versions


def compress(reg: Registry, names: list[str] | None, *, rank_ratio: float, opts: TrainOptions) -> CompressResult:
    import torch

    from mdl.core.compression import SVD_METHOD, compress_adapters, rank_for, shared_factors
    from mdl.core.recipes import default_weight_decay, published_recipe
    from mdl.core.training import DeviceSetup, accuracy, fit

    rank_for(1, 1, 1, rank_ratio)  # a bad ratio fails before anything is read
    if opts.epochs < 0:
        raise ValueError(f"--epochs must be 0 (no fine-tuning) or more, got {opts.epochs}")
    versions = _sources(reg, names)
    reg.check_writable()
    trunk = versions[0].trunk
    loader = NetworkLoader(reg)
    src = loader.network(trunk, "parallel-adapter", versions)
    dst = loader.network(trunk, SVD_METHOD)
    domains = [v.name for v in versions]
    report = compress_adapters(src, dst, domains, rank_ratio)
    betas = {p: b.detach().clone() for p, b in shared_factors(dst, domains[0]).items()}
    summary = report.to_dict()
    note(f"Compressed the adapters of {', '.join(domains)} (rank ratio {rank_ratio:g}): shared beta "
         f"{report.beta_params:,} parameters, own gamma {summary['own_fraction']:.1%} of a domain's adapters, "
         f"group {report.group}")
    dev = DeviceSetup.resolve(opts.device)
    dev.prepare(dst)
    pending, rows = [], []
    for v in versions:
        dd = open_version_data(v, on_bad_image=opts.on_bad_image)
        wd = opts.weight_decay if opts.weight_decay is not None else default_weight_decay(dd.name, len(dd.splits["train"]))
        train_loader, val_loader = loaders(dd, opts.batch_size, opts.workers, opts.seed)
        before, _ = accuracy(dst, val_loader, dev, domain=v.name)
        recipe, history, best_epoch, after = None, [], 0, before
        if opts.epochs > 0:  # fine-tune gamma, the norms and the head; beta is a buffer and stays shared
            recipe = build_recipe(opts, wd, published_recipe("mdl"))  # the resnet26 trunks' recipe, at the command's lr
            torch.manual_seed(opts.seed)
            with events.task("train") as bar:
                result = fit(dst, lambda n=v.name: dst.set_trainable(n), train_loader, val_loader, recipe, dev,
                             snapshot=lambda n=v.name: dst.domain_state_dict(n),
                             restore=lambda t, n=v.name: dst.load_domain_state_dict(n, t),
                             forward_kw={"domain": v.name}, progress=bar)
            history, best_epoch, after = result.history, result.best_epoch, result.best_accuracy
        now = shared_factors(dst, v.name)
        if any(not torch.equal(now[p].cpu(), b) for p, b in betas.items()):
            raise AssertionError("the shared factors changed during fine-tuning")  # a bug, never user input
        test_acc = held_out_accuracy(dst, dd, opts, dev, domain=v.name)
        note(f"{v.name}: {v.accuracy if v.accuracy is not None else float('nan'):.2f}% (v{v.version}, uncompressed) -> "
             f"{before:.2f}% compressed -> {after:.2f}% after {opts.epochs} fine-tuning epoch(s)")
        rows.append({"name": v.name, "from_version": v.version, "accuracy_uncompressed": v.accuracy,
                     "accuracy_compressed": before, "accuracy": after, "test_accuracy": test_acc})
        pending.append((v, recipe, history, best_epoch, after, before, test_acc))
    dst.cpu()
    members = [f"{v.name}@v{v.version}" for v in versions]
    registered = []
    for (v, recipe, history, best_epoch, after, before, test_acc), row in zip(pending, rows):
        svd = {**summary, "members": members, "source_version": v.version,
               "source_accuracy": v.accuracy, "source_domain_params": v.domain_params}
        config = {"svd": svd, "val_accuracy_before_finetune": before, "history": history, "best_epoch": best_epoch,
                  "recipe": recipe.to_dict() if recipe else None, "test_accuracy": test_acc,
                  "finetuned": "gamma, norms, head" if recipe else "nothing (--epochs 0)"}
        own = dst.parameter_counts()["domains"][v.name]
        version = reg.add_domain_version(
            name=v.name, method=SVD_METHOD, num_classes=v.num_classes, domain_params=own,
            accuracy=None if math.isnan(after) else after, trunk_id=v.trunk.id, classes=v.classes, data=v.data,
            config=config, tensors=dst.domain_state_dict(v.name))
        registered.append(version)
        row.update(version=version.version, domain_params=own, source_domain_params=v.domain_params)
    return CompressResult(registered, summary, rows)


def check_group(reg: Registry, versions: list[DomainVersionRecord]) -> str:
    """Load compressed versions from the registry into one network and check that every member of a
    group carries the same shared factors (returns the group id)."""
    from mdl.core.compression import SVD_METHOD, beta_digest, shared_factors

    groups = {v.config.get("svd", {}).get("group") for v in versions}
    if len(groups) != 1 or None in groups:
        raise ValueError(f"versions belong to different or no compression groups: {sorted(map(str, groups))}")
    net = NetworkLoader(reg).network(versions[0].trunk, SVD_METHOD, versions)
    digests = {beta_digest(shared_factors(net, v.name)) for v in versions}
    group = groups.pop()
    if digests != {group}:
        raise ValueError(f"compression group {group}: the members' shared factors differ ({sorted(digests)})")
    return group
