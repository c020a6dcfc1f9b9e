"""The papers' multi-domain methods beyond adding one domain: `compress-adapters` (Rebuffi et al. 2018
§3.4) and `joint-train` (Bilen & Vedaldi 2017). Thin commands over mdl.workflows.compress /
mdl.workflows.joint."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from mdl.cli._output import CliError, emit_json, info, out
from mdl.cli.options import (BadImage, BatchSize, Device, DeviceOpt, Home, Json, OnBadImage, Seed, Threads, Variant,
                             Workers, apply_threads, check_data, train_options)
from mdl.workflows.catalog import open_registry, version_row


def compress_adapters(
    domains: Annotated[Optional[list[str]], typer.Argument(help="parallel-adapter domains to compress together (default: every current one; at least 2).")] = None,
    rank_ratio: Annotated[float, typer.Option("--rank-ratio", help="K / C_in per layer, in (0, 1]; 0.5 is the paper's K = C/2.")] = 0.5,
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Fine-tuning epochs per domain (gamma, norms, head; 0: none).")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 0.01,
    batch_size: BatchSize = 64,
    wd: Annotated[Optional[float], typer.Option("--wd", min=0.0, help="Weight decay (default: per dataset).")] = None,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, seed: Seed = 0,
    on_bad_image: BadImage = OnBadImage.skip, home: Home = None, as_json: Json = False,
) -> None:
    """Share one SVD basis among the domains' parallel adapters; register each as a new version (parallel-adapter-svd)."""
    if not 0 < rank_ratio <= 1:  # also refuses nan; before torch and the registry load
        raise CliError(f"--rank-ratio must be in (0, 1], got {rank_ratio}")
    apply_threads(threads)
    from mdl.workflows.compress import compress

    reg = open_registry(home)
    res = compress(reg, domains or None, rank_ratio=rank_ratio,
                   opts=train_options(epochs, lr, batch_size, device, workers, seed, on_bad_image, resume=False, wd=wd))
    rep = res.report
    if as_json:
        emit_json({"group": rep, "domains": res.rows, "versions": [version_row(v) for v in res.versions]})
        return
    table = Table(title=f"Compressed adapters, group {rep['group']} (validation accuracy)", title_justify="left")
    for col in ("domain", "from", "uncompressed", "compressed", "fine-tuned", "own params", "was"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for r in res.rows:
        table.add_row(f"{r['name']} v{r['version']}", f"v{r['from_version']}",
                      "-" if r["accuracy_uncompressed"] is None else f"{r['accuracy_uncompressed']:.2f}",
                      f"{r['accuracy_compressed']:.2f}", f"{r['accuracy']:.2f}", f"{r['domain_params']:,}",
                      f"{r['source_domain_params']:,}")
    out.print(table)
    info(f"shared beta: {rep['beta_params']:,} parameters (counted once for the group); own gamma: "
         f"{rep['own_fraction']:.1%} of a domain's adapters ({rep['own_plus_beta_fraction']:.1%} with a whole "
         f"beta; {rep['group_fraction']:.1%} for the group)")


def joint_train(
    data: Annotated[list[str], typer.Argument(help="Data sources (at least 2): folders or builtin:NAME.")],
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Domain name per source, in order (default: from SRC).")] = None,
    variant: Annotated[Variant, typer.Option("--variant", help="bn: domain-specific BN + heads; instance-norm: shared instance norms, heads only.")] = Variant.bn,
    trunk: Annotated[Optional[str], typer.Option("--trunk", help="Trunk to start from, ARCH or ARCH:vN (default: newest that fits).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs (each: as many rounds as the largest domain has batches).")] = 10,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Initial SGD learning rate (default: the recipe's: 0.003 "
                                                "on a trunk pretrained elsewhere, 0.01 on one trained here).")] = None,
    batch_size: BatchSize = 64,
    wd: Annotated[Optional[float], typer.Option("--wd", min=0.0, help="Weight decay (default 1e-4).")] = None,
    device: DeviceOpt = Device.auto, threads: Threads = None, workers: Workers = 0, seed: Seed = 0,
    on_bad_image: BadImage = OnBadImage.fail, home: Home = None, as_json: Json = False,
) -> None:
    """Train several domains at once (round-robin batches, shared trunk trained too); register a new trunk and the domains on it."""
    for src in data:
        check_data(src)
    apply_threads(threads)
    from mdl.workflows.joint import joint_train as run

    reg = open_registry(home)
    new_trunk, versions = run(reg, data, names=name, variant=variant.value, trunk=trunk,
                              opts=train_options(epochs, lr, batch_size, device, workers, seed, on_bad_image, resume=False, wd=wd))
    if as_json:
        emit_json({"trunk": new_trunk.label, "num_params": new_trunk.num_params,
                   "domains": [version_row(v) for v in versions]})
        return
    info(f"Registered trunk {new_trunk.label} ({new_trunk.num_params:,} parameters, jointly trained) and "
         + ", ".join(f"{v.name} v{v.version} ({v.method}, {v.accuracy:.2f}%)" for v in versions))


# command name -> function, in the order `mdl --help` lists them
COMMANDS = {"compress-adapters": compress_adapters, "joint-train": joint_train}
