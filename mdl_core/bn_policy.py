"""Batch-norm statistics policies (recipes.BN_POLICIES): what training does to a domain's own running
statistics. A trunk pretrained elsewhere arrives with ImageNet's statistics in every norm; the papers'
recipe trains on the new domain's batch statistics, which changes every feature the frozen shared
layers see at once. ``keep`` holds the copied statistics (only the affines train); ``adabn`` first
re-estimates them on the domain (Li et al. 2016, AdaBN) as an exact one-pass average."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

FROZEN = ("keep", "adabn")         # norms stay in eval mode while the domain trains
REESTIMATE = ("adabn", "adabn+batch")


def freeze(norms: Sequence[nn.Module]) -> None:
    """Eval mode for ``norms``: they normalise with their running statistics and never update them."""
    for m in norms:
        m.train(False)


@torch.no_grad()
def reestimate(net: nn.Module, norms: Sequence[nn.Module], loader: Iterable, dev, **forward_kw) -> int:
    """Replace the running statistics of ``norms`` by their average over one pass of ``loader``: each
    norm's mean (and unbiased variance) of every batch, averaged over the batches (BN's cumulative
    average, momentum None). Everything else runs in eval mode. Returns the number of batches."""
    if not norms:
        return 0
    was_training = net.training
    momenta = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train(True)
    batches = 0
    try:
        for x, _ in loader:
            with dev.autocast():
                net(dev.batch(x), **forward_kw)
            batches += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.train(was_training)
    return batches
