"""Training workflows: pretrain, add-domain, gate-train, score, predict, demo. Each command parses its
options, opens the registry and hands over to mdl.workflows; heavy imports happen inside."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mdl.cli._output import emit_json, info, out
from mdl.cli.distributed import session as distributed_session
from mdl.cli.options import (TRUNK_HELP, BadImage, BatchSize, BnStats, Data, DeviceOpt, Device, Epochs, GateScope,
                             Home, Json, Lr, OnBadImage, OptimizerName, Placement, RecipeLr, RecipeName, Resume,
                             ScheduleName, Seed, Split, SyncBn, Threads, TrainImages, TrainOn, ValImages, WdGroups,
                             Workers, apply_threads, check_data, train_options, value)
from mdl.workflows.catalog import DEFAULT_HOME, gate_row, open_registry, resolve_home, version_row


def pretrain(
    data: Data,
    arch: Annotated[str, typer.Option("--arch", help="Trunk to train from scratch: resnet26_dw, resnet26 or timm/<model>.")] = "resnet26_dw",
    name: Annotated[Optional[str], typer.Option("--name", help="Source domain name (default: from SRC).")] = None,
    width: Annotated[float, typer.Option("--width", min=0.0625, help="Channel width multiplier.")] = 1.0,
    image_size: Annotated[int, typer.Option("--image-size", min=8, help="Shorter side after resizing.")] = 72,
    epochs: Epochs = 10, lr: Lr = 0.1, batch_size: BatchSize = 64,
    wd: Annotated[float, typer.Option("--wd", min=0.0, help="Weight decay.")] = 1e-4,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, seed: Seed = 0,
    on_bad_image: BadImage = OnBadImage.fail, resume: Resume = False, sync_bn: SyncBn = False,
    home: Home = None, as_json: Json = False,
) -> None:
    """Train the whole network on a source domain; register it as a trunk version and as the first domain.
    Runs unchanged under torchrun (DDP; rank 0 registers)."""
    check_data(data)
    apply_threads(threads)
    from mdl.workflows.train import pretrain as run

    reg = open_registry(home)
    with distributed_session(sync_bn) as main:
        done = run(reg, data, name=name, arch=arch, width=width, image_size=image_size,
                   opts=train_options(epochs, lr, batch_size, device, workers, seed, on_bad_image, resume, wd))
    if not main:  # another torchrun rank: rank 0 reports
        return
    trunk, version = done
    result = {"trunk": trunk.label, "num_params": trunk.num_params, "domain": version_row(version)}
    if as_json:
        emit_json(result)
    else:
        info(f"Registered trunk {trunk.label} ({trunk.num_params:,} parameters) and domain {version.name} "
             f"v{version.version}: {version.accuracy:.2f}% validation accuracy")


def add_domain(
    name: Annotated[str, typer.Argument(help="Domain name (lowercase letters, digits, '_' or '-').")],
    data: Data,
    method: Annotated[str, typer.Option("--method", help="Adapter type (see DESIGN: dw, dw-sharing, bn, ...).")] = "dw",
    trunk: Annotated[Optional[str], typer.Option("--trunk", help=TRUNK_HELP)] = None,
    source_domain: Annotated[Optional[str], typer.Option("--domain", help="Which domain of SRC to read (a decathlon folder holds several; default: NAME).")] = None,
    epochs: Epochs = 10, lr: RecipeLr = None, batch_size: BatchSize = 64,
    wd: Annotated[Optional[float], typer.Option("--wd", min=0.0, help="Weight decay (default: the recipe's; the "
                  "papers' is per dataset; with --wd-groups rebuffi the norms' and classifier's, 5e-4).")] = None,
    recipe: Annotated[RecipeName, typer.Option("--recipe", help="auto: transfer on a trunk pretrained elsewhere "
                      "(ImageNet Lite0, timm weights), mdl (the paper's SGD schedule) on a trunk pretrained here; "
                      "guo2019 or rebuffi2018: the references' per-domain preprocessing (guo2019 adds "
                      "dropout 0.5 for gtsrb, ucf101, daimlerpedcls).")] = RecipeName("auto"),
    head_lr: Annotated[Optional[float], typer.Option("--head-lr", help="Learning rate of the new tensors (head, "
                       "adapters); default: the recipe's (transfer: 10x --lr; the papers': --lr).")] = None,
    optimizer: Annotated[Optional[OptimizerName], typer.Option("--optimizer", help="Default: the recipe's.")] = None,
    schedule: Annotated[Optional[ScheduleName], typer.Option("--schedule", help="step (x0.1 at 50% and 75%) or "
                        "cosine; default: the recipe's.")] = None,
    bn_stats: Annotated[Optional[BnStats], typer.Option("--bn-stats", help="The domain's BN running statistics: "
                        "batch (train on batch statistics), keep (the trunk's, unchanged; affines train), adabn "
                        "(re-estimated in one pass, then kept), adabn+batch; default: the recipe's.")] = None,
    probe_epochs: Annotated[Optional[int], typer.Option("--probe-epochs", min=0, help="LP-FT: train only the new "
                            "tensors for this many of the epochs first; default: the recipe's.")] = None,
    train_images: TrainImages = None, val_images: ValImages = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Shorter side after resizing "
                          "(training crops 64/72 of it); default: the trunk's recorded size (72).")] = None,
    wd_groups: Annotated[Optional[WdGroups], typer.Option("--wd-groups", help="Weight-decay grouping: guo (one "
                         "per-dataset decay; default) or rebuffi (by kernel: 3x3 1e-4, 1x1 1e-4, the rest --wd).")] = None,
    train_on: Annotated[TrainOn, typer.Option("--train-on", help="train (pick the best epoch on val) or "
                        "train+val (fixed epochs, no validation: for a test submission).")] = TrainOn.train,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, seed: Seed = 0,
    on_bad_image: BadImage = OnBadImage.fail, resume: Resume = False, sync_bn: SyncBn = False,
    home: Home = None, as_json: Json = False,
) -> None:
    """Train and register a new version of domain NAME against the frozen trunk. Runs unchanged under
    torchrun (DDP; rank 0 registers)."""
    check_data(data)
    apply_threads(threads)
    from mdl.workflows.train import add_domain as run

    reg = open_registry(home)
    opts = train_options(epochs, lr, batch_size, device, workers, seed, on_bad_image, resume, wd,
                         recipe=recipe.value, wd_groups=value(wd_groups), train_on=train_on.value, head_lr=head_lr,
                         optimizer=value(optimizer), schedule=value(schedule), bn_stats=value(bn_stats),
                         probe_epochs=probe_epochs, train_images=train_images, val_images=val_images,
                         image_size=image_size)
    with distributed_session(sync_bn) as main:
        version = run(reg, name, data, method=method, trunk=trunk, source_domain=source_domain, opts=opts)
    if not main:  # another torchrun rank: rank 0 reports
        return
    if as_json:
        emit_json(version_row(version))
    else:
        acc = (f"{version.accuracy:.2f}% validation accuracy" if version.accuracy is not None else
               f"trained on {train_on.value} for {epochs} epochs (no held-out validation)")
        info(f"Registered {version.name} v{version.version} ({version.method}, {version.domain_params:,} own "
             f"parameters): {acc}")


def gate_train(
    domain: Annotated[Optional[list[str]], typer.Option("--domain", help="Target domain (repeatable; default: all dw domains).")] = None,
    placement: Annotated[Placement, typer.Option("--placement", help="Gated stages (paper Table 3).")] = Placement.all,
    scope: Annotated[GateScope, typer.Option("--scope", help="gate: only the gate trains (the paper's text); "
                     "gate+domain: also the target's norms, last pointwise conv, end BN and head (the released "
                     "code), registered as a new version of the target.")] = GateScope.gate,
    epochs: Epochs = 10, lr: Lr = 0.1, batch_size: BatchSize = 64,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, seed: Seed = 0, home: Home = None, as_json: Json = False,
) -> None:
    """Train soft-sharing gates (filters frozen) and register them; report accuracy with and without.
    Runs unchanged under torchrun (DDP; rank 0 registers)."""
    apply_threads(threads)
    from mdl.workflows.gates import GateOptions, train_gates

    reg = open_registry(home)
    opts = GateOptions(placement=placement.value, epochs=epochs, lr=lr, batch_size=batch_size,
                       device=device.value, workers=workers, seed=seed, scope=scope.value)
    with distributed_session() as main:
        gates = train_gates(reg, domain, opts)
    if not main:  # another torchrun rank: rank 0 reports
        return
    rows = [gate_row(g) for g in gates]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Soft-sharing gates (validation accuracy)", title_justify="left")
    for col in ("domain", "gate", "placement", "without", "with", "gain"):
        table.add_column(col, justify="left" if col in ("domain", "placement") else "right")
    for r in rows:
        gain = r["accuracy_with_gate"] - r["accuracy_without_gate"]
        table.add_row(f"{r['name']} v{r['version']}", f"v{r['gate']}", r["placement"],
                      f"{r['accuracy_without_gate']:.2f}", f"{r['accuracy_with_gate']:.2f}", f"{gain:+.2f}")
    out.print(table)


def score(
    split: Annotated[Split, typer.Option("--split", help="Evaluate on val or test.")] = Split.val,
    results: Annotated[Optional[Path], typer.Option("--results", help="Write the challenge's results.json here (decathlon domains' test images only).")] = None,
    on_bad_image: BadImage = OnBadImage.skip,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, home: Home = None, as_json: Json = False,
) -> None:
    """Per-domain accuracy and the Visual Decathlon total (official constants)."""
    apply_threads(threads)
    from mdl.workflows.evaluate import score as run

    report = run(open_registry(home), split=split.value, results=results, device=device.value, workers=workers,
                 on_bad_image=on_bad_image.value)
    if as_json:
        emit_json(report)
    else:
        out.print(score_table(report))


def predict(
    name: Annotated[str, typer.Argument(help="Domain for the images (an IMAGE written other@path uses domain other).")],
    images: Annotated[list[str], typer.Argument(help="Image files.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1)] = 5,
    device: DeviceOpt = Device.auto, threads: Threads = None, home: Home = None, as_json: Json = False,
) -> None:
    """Classify images with registered domains (several domains share one stacked pass)."""
    apply_threads(threads)
    from mdl.workflows.evaluate import predict as run

    rows = run(open_registry(home), name, images, top_k=top_k, device=device.value)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        top = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        out.print(f"{r['image']}  [{r['domain']} v{r['version']}]  {top}")


def demo(
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0,
    home: Annotated[Optional[Path], typer.Option("--home", envvar="MDL_DEMO_HOME",
                                                 help="Demo registry (default ~/.mdl/demo); a second run reuses it.")] = None,
    as_json: Json = False,
) -> None:
    """The whole workflow on the bundled mini-decathlon, sized for a few minutes on 2 CPU cores."""
    apply_threads(threads)
    from mdl.workflows.demo import run

    report = run(resolve_home(home) if home else DEFAULT_HOME / "demo", device=device.value, workers=workers)
    if as_json:
        emit_json(report)
    else:
        out.print(score_table(report["score"]))
        info(f"demo finished in {report['seconds']:.0f}s; registry at {report['home']} "
             f"(try `mdl list --home {report['home']}`)")


def score_table(report: dict) -> Table:
    table = Table(title=f"Decathlon score on {report['split']}: {report['total']:.0f}", title_justify="left")
    for col in ("domain", "v", "method", "trained on", "accuracy", "baseline", "score", "gate", "basis"):
        table.add_column(col, justify="right" if col in ("v", "accuracy", "baseline", "score") else "left")
    for r in report["domains"]:
        table.add_row(r["name"], str(r["version"]), r["method"], r.get("trained_on") or "-",
                      "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}",
                      "-" if r["baseline"] is None else f"{r['baseline']:.2f}",
                      "-" if r["score"] is None else f"{r['score']:.0f}", r["gate"] or "", r["score_basis"])
    return table


# command name -> function, in the order `mdl --help` lists them
COMMANDS = {"pretrain": pretrain, "add-domain": add_domain, "gate-train": gate_train, "score": score, "predict": predict, "demo": demo}
