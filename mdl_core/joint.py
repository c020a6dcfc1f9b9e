"""Joint multi-domain training (Bilen & Vedaldi 2017, "Universal representations: the missing link
between faces, text, planktons, and cat breeds"): one network learnt on several domains at once.

* :class:`RoundRobin` — the sampler: one batch of each domain in turn (d0, d1, ..., d0, d1, ...). An
  epoch is ``rounds`` rounds, by default as many as the longest domain has batches; a shorter domain's
  loader is restarted (a fresh shuffle) when it runs out, so every domain gets the same number of steps.
  It only orders batches; wrapping it (e.g. per-rank loaders under DDP) needs nothing else.
* :func:`fit_joint` — the loop: one SGD step per batch (not a summed loss over a round), the batch's own
  domain forwarded (its norms and head; the shared trunk weights are trained by every domain's steps).
  A domain's per-domain parameters get no gradient on the other domains' steps, so SGD leaves them (and
  their momentum) alone there. The best epoch is the one with the highest mean validation accuracy over
  the domains; its tensors are restored at the end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mdl.core import bn_policy, threads
from mdl.core.recipes import Recipe
from mdl.core.training import DeviceSetup, Diverged, Progress, accuracy, make_optimizer, set_lr

Tensors = dict[str, torch.Tensor]


class RoundRobin:
    """Batches of several loaders interleaved one per domain in turn: yields ``(domain, batch)``."""

    def __init__(self, loaders: dict[str, Iterable], rounds: int | None = None):
        if not loaders:
            raise ValueError("round-robin needs at least one domain")
        self.loaders = dict(loaders)
        lengths = {d: len(dl) for d, dl in self.loaders.items()}
        empty = [d for d, n in lengths.items() if n == 0]
        if empty:
            raise ValueError(f"domain(s) {', '.join(empty)} have no training batches")
        self.rounds = int(rounds) if rounds is not None else max(lengths.values())
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")

    def __len__(self) -> int:
        return self.rounds * len(self.loaders)

    def __iter__(self) -> Iterator[tuple[str, object]]:
        its = {d: iter(dl) for d, dl in self.loaders.items()}
        for _ in range(self.rounds):
            for d, dl in self.loaders.items():
                try:
                    batch = next(its[d])
                except StopIteration:  # a shorter domain starts over (its loader reshuffles)
                    its[d] = iter(dl)
                    batch = next(its[d])
                yield d, batch


@dataclass
class JointResult:
    best_mean_accuracy: float
    best_epoch: int
    best_accuracy: dict[str, float]            # each domain's validation accuracy at the best epoch
    history: list[dict] = field(default_factory=list)
    images_per_s: float = 0.0


def fit_joint(net: nn.Module, params: list[nn.Parameter], train_loaders: dict[str, Iterable],
              val_loaders: dict[str, Iterable], recipe: Recipe, dev: DeviceSetup, *,
              snapshot: Callable[[], Tensors], restore: Callable[[Tensors], None],
              rounds: int | None = None, progress: Progress | None = None) -> JointResult:
    """Train ``params`` on the round-robin of ``train_loaders`` (``net(x, domain=d)``), evaluate every
    domain after each epoch, restore the epoch with the best mean validation accuracy."""
    opt = make_optimizer(params, recipe)
    sampler = RoundRobin(train_loaders, rounds)
    steps = len(sampler)
    best_mean, best_epoch, best_acc, best, history, seen, train_time = -1.0, 0, {}, None, [], 0, 0.0
    if progress:
        progress.start(recipe.epochs * steps)
    for epoch in range(recipe.epochs):
        for i, dl in enumerate(train_loaders.values()):  # each epoch's shuffles depend on (seed, epoch) only
            generator = getattr(dl, "generator", None)
            if generator is not None:
                generator.manual_seed(recipe.seed * 100_003 + epoch * 1_009 + i)
        net.train()
        if recipe.bn_stats in bn_policy.FROZEN:  # the domains' norms keep the statistics they were copied with
            for d in train_loaders:
                bn_policy.freeze(net.domain_batchnorms(d))
        sums = {d: [0.0, 0, 0] for d in train_loaders}  # loss sum, correct, count
        t0 = time.perf_counter()
        for step, (d, (x, y)) in enumerate(sampler):
            set_lr(opt, recipe, epoch, step, steps)
            threads.rebalance()
            x, y = dev.batch(x), y.to(dev.device)
            with dev.autocast():
                logits = net(x, domain=d)
                loss = F.cross_entropy(logits.float(), y)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"joint training diverged: the loss became {value} at epoch {epoch + 1}, step "
                               f"{step + 1} ({d}); nothing was registered (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            s = sums[d]
            s[0] += value * len(y)
            s[1] += (logits.argmax(1) == y).sum().item()
            s[2] += len(y)
            if progress:
                progress.advance(1, f"epoch {epoch + 1}/{recipe.epochs} {d} loss {value:.3f}")
        train_time += time.perf_counter() - t0
        seen += sum(s[2] for s in sums.values())
        val = {d: accuracy(net, dl, dev, domain=d)[0] for d, dl in val_loaders.items()}
        mean = sum(val.values()) / len(val)
        history.append({"epoch": epoch + 1, "lr": recipe.lr_at(epoch), "val_mean_accuracy": mean,
                        "domains": {d: {"train_loss": s[0] / max(s[2], 1), "train_accuracy": 100.0 * s[1] / max(s[2], 1),
                                        "val_accuracy": val[d]} for d, s in sums.items()}})
        if mean > best_mean:
            best_mean, best_epoch, best_acc = mean, epoch + 1, dict(val)
            best = {k: v.detach().clone() for k, v in snapshot().items()}
    if best is not None:
        restore(best)
    return JointResult(best_mean, best_epoch, best_acc, history, seen / train_time if train_time else 0.0)


def shared_parameters(net) -> list[nn.Parameter]:
    """The trunk parameters no domain owns (the universal network's shared weights)."""
    own = {id(p) for d in net.domains for p in net.trainable_parameters(d)}
    return [p for p in net.trunk.parameters() if id(p) not in own]


def joint_parameters(net, domains: list[str]) -> list[nn.Parameter]:
    """Shared trunk weights and every listed domain's own parameters, made trainable (nothing else)."""
    params = shared_parameters(net) + [p for d in domains for p in net.trainable_parameters(d)]
    return net._train_only(params)
