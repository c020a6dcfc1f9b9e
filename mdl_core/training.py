"""One training loop for every job (pretraining, a domain's adapter, a gate), with per-epoch
checkpoints that a killed run resumes from, best-validation-epoch selection, and device handling.

What is trained and what counts as "the result" differ per job, so the caller passes:
`params` (the tensors the optimiser may change), `snapshot()` (the result's tensors as a flat dict,
e.g. the domain's state dict) and `restore(tensors)`. Checkpoints hold only safetensors + JSON.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mdl.core import bn_policy, distributed, threads
from mdl.core.choices import DEVICES
from mdl.core.recipes import Recipe
from mdl.files import atomic_path, atomic_write

Tensors = dict[str, torch.Tensor]


# --- devices ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSetup:
    """Where to run, and the CUDA-only speed-ups (bf16 autocast, channels_last)."""

    device: torch.device
    amp: bool
    channels_last: bool

    @classmethod
    def resolve(cls, name: str = "auto") -> "DeviceSetup":
        if name not in DEVICES:
            raise ValueError(f"unknown --device {name!r}: choose {', '.join(DEVICES)}")
        if name == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
        # channels_last everywhere: oneDNN's depthwise convolutions are ~1.5x faster in it on CPU as well
        return cls(torch.device("cuda" if cuda else "cpu"), amp=cuda, channels_last=True)

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, net: nn.Module) -> nn.Module:
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# --- evaluation ------------------------------------------------------------------------------------


@torch.no_grad()
def predict_logits(net: nn.Module, loader: Iterable, dev: DeviceSetup, **forward_kw) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and labels of a loader, in loader order (eval mode)."""
    was_training = net.training
    net.eval()
    logits, labels = [], []
    try:
        for x, y in loader:
            threads.rebalance()  # another mdl job may have started or ended
            with dev.autocast():
                out = net(dev.batch(x), **forward_kw)
            logits.append(out.float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        net.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def accuracy(net: nn.Module, loader: Iterable, dev: DeviceSetup, **forward_kw) -> tuple[float, int]:
    """Top-1 accuracy in percent over the labelled samples, and how many there were (over every rank
    when the loader is split over the ranks of a torchrun job)."""
    logits, labels = predict_logits(net, loader, dev, **forward_kw)
    labelled = (labels >= 0) & distributed.real_samples(loader, len(labels))
    correct = (logits[labelled].argmax(1) == labels[labelled]).sum().item() if labelled.any() else 0
    n, correct = distributed.sum_over_shards(loader, int(labelled.sum()), correct)
    if n == 0:
        return float("nan"), 0
    return 100.0 * correct / n, int(n)


# --- checkpoints -----------------------------------------------------------------------------------


class Checkpoint:
    """A run folder: `state.json` (epoch, best, history, run key) + `tensors.safetensors` (current and
    best result tensors, optimiser momentum, RNG). Replaced atomically after every epoch."""

    def __init__(self, folder: Path, key: dict):
        self.folder = Path(folder)
        self.key = key

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file() and (self.folder / "tensors.safetensors").is_file()

    def save(self, state: dict, tensors: Tensors) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**state, "key": self.key})  # before anything is replaced
        with atomic_path(self.folder / "tensors.safetensors") as tmp:  # tensors first: state.json points at them
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        atomic_write(self.folder / "state.json", text)

    def load(self) -> tuple[dict, Tensors]:
        from safetensors.torch import load_file

        state = json.loads((self.folder / "state.json").read_text())
        if state.get("key") != self.key:
            raise ValueError(f"checkpoint in {self.folder} belongs to a run with different settings; "
                             "rerun without --resume to start over")
        return state, load_file(str(self.folder / "tensors.safetensors"))

    def discard(self) -> None:
        for name in ("state.json", "tensors.safetensors"):
            (self.folder / name).unlink(missing_ok=True)
        for tmp in self.folder.glob(".*.tmp"):  # left by a save that was killed
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


# --- the loop --------------------------------------------------------------------------------------


@dataclass
class FitResult:
    best_accuracy: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    images_per_s: float = 0.0
    resumed_from: int = 0


class Progress(Protocol):
    """What the training loops report their steps to (mdl.workflows.events.Task is one)."""

    def start(self, total: int | None, completed: int = 0) -> None: ...

    def advance(self, steps: int = 1, status: str = "") -> None: ...


def make_optimizer(groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over ``groups`` (parameters, or groups with their own weight decay)."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def set_lr(opt: torch.optim.Optimizer, recipe: Recipe, epoch: int, step: int, steps: int) -> None:
    """Every group's lr for this step: the recipe's lr x the schedule and warm-up x the group's
    ``lr_scale`` (recipes.lr_groups: the new tensors' head_lr); a group of copied tensors waits at 0
    through the recipe's probe epochs (LP-FT)."""
    f = recipe.factor(epoch, step, steps)
    probing = epoch < recipe.probe_epochs
    for group in opt.param_groups:
        group["lr"] = 0.0 if probing and group.get("copied", True) else recipe.lr * f * group.get("lr_scale", 1.0)


def _skip_waiting(opt: torch.optim.Optimizer) -> None:
    """Groups at lr 0 get no step at all (no momentum, no decay, no AdamW moments accumulate)."""
    for group in opt.param_groups:
        if group["lr"] == 0.0:
            for p in group["params"]:
                p.grad = None


class Diverged(ValueError):
    """The training loss became NaN or infinite."""


def fit(
    net: nn.Module,
    params: Callable[[], list[nn.Parameter]],
    train_loader: Iterable,
    val_loader: Iterable | None,
    recipe: Recipe,
    dev: DeviceSetup,
    *,
    snapshot: Callable[[], Tensors],
    restore: Callable[[Tensors], None],
    forward_kw: dict | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    train_mode: Callable[[], None] | None = None,
    norms: Callable[[], list[nn.Module]] | None = None,
) -> FitResult:
    """Train `params()` (parameters, or optimizer groups with their own weight decay and lr scale) for
    `recipe.epochs`, evaluate on `val_loader` after each epoch, restore the best epoch's tensors at the
    end; with no `val_loader` keep the last epoch (best_accuracy NaN). With `resume`, continue from
    `checkpoint`. `norms()`: the batch norms the recipe's BN statistics policy applies to (bn_policy), asked
    for once the network is wrapped (``--sync-bn`` replaces them)."""
    forward_kw = forward_kw or {}
    start, best_acc, best_epoch, history, best, tensors = 0, -1.0, 0, [], None, {}
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise ValueError("nothing to resume: no checkpoint of an unfinished run with these settings")
        state, tensors = checkpoint.load()
        start, best_acc, best_epoch, history = state["epoch"], state["best_accuracy"], state["best_epoch"], state["history"]
        restore({k[4:]: v for k, v in tensors.items() if k.startswith("cur/")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    groups = params()  # asked for after a restore, which may have replaced the tensors
    if groups and isinstance(groups[0], dict):  # weight-decay groups (recipes.weight_decay_groups)
        params = [p for g in groups for p in g["params"]]
    else:
        params, groups = list(groups), list(groups)
    model = distributed.wrap(net)  # DistributedDataParallel under torchrun (after requires_grad is set), else net
    opt = make_optimizer(groups, recipe)
    norms = norms() if norms is not None else []
    if resume:
        for key, value in tensors.items():
            if key.startswith("opt/"):  # opt/<parameter index>/<state name>
                i, name = key[4:].split("/", 1)
                p = params[int(i)]
                opt.state[p][name] = value if name == "step" else value.to(p.device)
        torch.set_rng_state(tensors["rng/torch"])
    elif recipe.bn_stats in bn_policy.REESTIMATE:  # the domain's own statistics, before its first step
        bn_policy.reestimate(net, norms, train_loader, dev, **forward_kw)
        distributed.sync_buffers(net)

    seen, train_time = 0, 0.0
    steps = _len(train_loader)
    if progress:
        progress.start(recipe.epochs * steps, start * steps)
    for epoch in range(start, recipe.epochs):
        generator = getattr(train_loader, "generator", None)
        if generator is not None:  # the epoch's shuffle depends on (seed, epoch) only, so a resumed run matches
            generator.manual_seed(recipe.seed * 100_003 + epoch)
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):  # DistributedSampler: seed + epoch
            train_loader.sampler.set_epoch(epoch)
        (train_mode or net.train)()
        if recipe.bn_stats in bn_policy.FROZEN:
            bn_policy.freeze(norms)
        loss_sum, correct, count, t0 = 0.0, 0, 0, time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            set_lr(opt, recipe, epoch, step, steps)
            threads.rebalance()  # another mdl job may have started or ended
            x, y = dev.batch(x), y.to(dev.device)
            with dev.autocast():
                logits = model(x, **forward_kw)
                loss = F.cross_entropy(logits.float(), y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # diverged: stop before the tensors become NaN; nothing is registered
                raise Diverged(f"training diverged: the loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; "
                               "nothing was registered (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _skip_waiting(opt)
            opt.step()
            loss_sum += loss_value * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
            if progress:
                rate = (seen + count) / max(train_time + time.perf_counter() - t0, 1e-9)
                progress.advance(1, (
                    f"epoch {epoch + 1}/{recipe.epochs} loss {loss_sum / count:.3f} "
                    f"acc {100 * correct / count:.1f} {rate:.0f} img/s"))
        train_time += time.perf_counter() - t0
        loss_sum, correct, count = distributed.sum_over_ranks(loss_sum, correct, count)  # every rank's samples
        seen += count
        distributed.sync_buffers(net)  # every rank evaluates and keeps rank 0's BN statistics
        # no validation split (training on train+val): fixed epochs, the last one is kept
        val_acc = accuracy(net, val_loader, dev, **forward_kw)[0] if val_loader is not None else None
        history.append({"epoch": epoch + 1, "lr": recipe.lr_at(epoch), "train_loss": loss_sum / max(count, 1),
                        "train_accuracy": 100.0 * correct / max(count, 1), "val_accuracy": val_acc})
        current = snapshot()
        if val_acc is None or val_acc > best_acc:
            val_acc = float("nan") if val_acc is None else val_acc
            best_acc, best_epoch, best = val_acc, epoch + 1, {k: v.detach().clone() for k, v in current.items()}
        if checkpoint is not None and distributed.is_main():  # one writer
            tensors = {f"cur/{k}": v for k, v in current.items()}
            tensors |= {f"best/{k}": v for k, v in best.items()}
            tensors |= {f"opt/{i}/{name}": v for i, p in enumerate(params)
                        for name, v in opt.state.get(p, {}).items() if isinstance(v, torch.Tensor)}
            tensors["rng/torch"] = torch.get_rng_state()
            checkpoint.save({"epoch": epoch + 1, "best_accuracy": best_acc, "best_epoch": best_epoch,
                             "history": history}, tensors)
    if best is not None:
        restore(best)
    return FitResult(best_acc, best_epoch, history, seen / train_time if train_time else 0.0, start)


def _len(loader) -> int:
    try:
        return len(loader)
    except TypeError:
        return 0
