"""Every option type the commands share, in one place. Choices are built from the core's own tables
(mdl.core.choices, mdl.core.recipes: torch-free), never hand copies, so `mdl --help` stays fast and a
new choice in the core shows up here by itself."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mdl.cli._output import CliError
from mdl.core import choices, recipes
from mdl.core.choices import DEFAULT_TRUNK
from mdl.workflows.catalog import HOME_ENV


def choice(name: str, values) -> type[Enum]:
    """A Typer choice type whose values are ``values`` (member names: '+' and '-' become '_')."""
    return Enum(name, {v.replace("+", "_").replace("-", "_"): v for v in values}, type=str)


Device = choice("Device", choices.DEVICES)
OnBadImage = choice("OnBadImage", choices.ON_BAD_IMAGE)
Placement = choice("Placement", choices.PLACEMENTS)
GateScope = choice("GateScope", choices.GATE_SCOPES)
Split = choice("Split", choices.SCORE_SPLITS)
Variant = choice("Variant", choices.JOINT_VARIANTS)
RecipeName = choice("RecipeName", (recipes.AUTO, *recipes.PUBLISHED_RECIPES))
OptimizerName = choice("OptimizerName", recipes.OPTIMIZERS)
ScheduleName = choice("ScheduleName", recipes.SCHEDULES)
BnStats = choice("BnStats", recipes.BN_POLICIES)
WdGroups = choice("WdGroups", recipes.WD_GROUPS)
TrainOn = choice("TrainOn", recipes.TRAIN_ON)


def value(option: Enum | None):
    """An optional choice's plain value (None stays None)."""
    return None if option is None else option.value


# --- where and how results go -----------------------------------------------------------------------
Home = Annotated[Path, typer.Option("--home", envvar=HOME_ENV, show_default=False,
                                    help=f"Registry folder (default: ${HOME_ENV}, else ~/.mdl).")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout, nothing else there.")]
THREADS_ENV = "MDL_THREADS"
Threads = Annotated[Optional[int], typer.Option(
    "--threads", envvar=THREADS_ENV, min=1, show_default=False,
    help="CPU threads for torch (default: every core when alone, a fair share when other mdl jobs run).")]
SyncBn = Annotated[bool, typer.Option(
    "--sync-bn", help="Under torchrun: per-domain batch norm statistics over the global batch (SyncBatchNorm); "
                      "without it each process normalises with its own share of the batch.")]


def apply_threads(threads: int | None = None) -> int:
    """Set mdl.core.threads' policy (a fair share of the cores among the mdl jobs running on the machine,
    re-counted while training) before torch starts its thread pool; returns the thread count."""
    from mdl.core import threads as policy

    return policy.start(threads)


# --- data ---------------------------------------------------------------------------------------------
Data = Annotated[str, typer.Option("--data", help="Decathlon folder, MNIST-format (IDX) folder, ImageFolder tree, or builtin:NAME.")]
BadImage = Annotated[OnBadImage, typer.Option("--on-bad-image", help="Skip (and count) or fail on undecodable images.")]
SUBSET = "A seeded, stratified subset of this many {} images (default: all)."
TrainImages = Annotated[Optional[int], typer.Option("--train-images", min=1, help=SUBSET.format("training"))]
ValImages = Annotated[Optional[int], typer.Option("--val-images", min=1, help=SUBSET.format("validation"))]


def check_data(src: str) -> None:
    """A wrong path fails at once, before torch and the registry load (seconds of start-up)."""
    if not src.startswith("builtin:") and not Path(src).expanduser().exists():
        raise CliError(f"data source not found: {src}", hint="give a folder or builtin:NAME")


# --- training -----------------------------------------------------------------------------------------
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs (lr decays x0.1 at 50% and 75%).")]
Lr = Annotated[float, typer.Option("--lr", help="Initial SGD learning rate.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help=(
    "Global batch size: under torchrun each of the N processes loads batch-size / N per step "
    "(so --lr keeps its meaning on any number of processes)."))]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto uses CUDA (bf16 autocast, channels_last) when present.")]
Workers = Annotated[int, typer.Option("--workers", min=0, help="Data-loading worker processes.")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Random seed (shuffling, initialisation, splits).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the killed run with the same settings.")]
RecipeLr = Annotated[Optional[float], typer.Option("--lr", help=(
    "Learning rate of the tensors copied from the trunk (default: the recipe's: 0.1 for the papers' recipe, "
    "the transfer recipe's on a pretrained trunk)."))]
TrunkArch = Annotated[str, typer.Option("--arch", help="Trunk: timm/<model>, resnet26_dw or resnet26.")]
TRUNK_HELP = f"ARCH or ARCH:vN (default: newest compatible; a fresh registry imports {DEFAULT_TRUNK})."


def train_options(epochs, lr, batch_size, device, workers, seed, on_bad_image, resume, wd=None, **more):
    """The TrainOptions of a training command's shared options (``more``: the command's own)."""
    from mdl.workflows.train import TrainOptions

    return TrainOptions(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=wd, device=device.value,
                        workers=workers, seed=seed, on_bad_image=on_bad_image.value, resume=resume, **more)
