"""Training keeps the best validation epoch, not the last: `fit` (one domain, also across a resume) and
`fit_joint` (the best mean over the domains) end with the tensors the network had when the best score
was measured. The validation accuracy is scripted so that the best epoch is known and is not the last;
the stand-in records the network's tensors each time it is asked, so the test compares against what
was actually measured, not against what fit chose to snapshot."""
from __future__ import annotations

import pytest
import torch

from mdl.core import create_network
from mdl.core.joint import fit_joint, joint_parameters
from mdl.core.recipes import Recipe
from mdl.core.training import Checkpoint, DeviceSetup, fit

CPU = DeviceSetup(torch.device("cpu"), amp=False, channels_last=False)
RECIPE = dict(lr=0.05, weight_decay=0.0, batch_size=8, warmup=False)


def _batches(seed: int, classes: int, n: int = 16, batch: int = 8):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _state(net) -> dict[str, torch.Tensor]:
    """Every tensor of the network but the BN step counters (bookkeeping, not part of a domain's tensors)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class ScriptedAccuracy:
    """Stands in for `accuracy`: answers each domain's scripted accuracies in turn (an exception in the
    script is raised instead) and records the whole network's tensors at every call."""

    def __init__(self, net, script: dict):
        self.net, self.script, self.calls, self.seen = net, script, {d: 0 for d in script}, []

    def __call__(self, net, loader, dev, domain=None, **kw):
        assert net is self.net
        self.seen.append(_state(net))
        value = self.script[domain][self.calls[domain]]
        self.calls[domain] += 1
        if isinstance(value, Exception):
            raise value
        return float(value), 8


class Killed(Exception):
    """The process dying in the middle of an epoch's evaluation."""


def _domain_net():
    torch.manual_seed(0)
    return create_network("resnet26_dw", method="dw", domains={"d": 3}, width=0.125)


def _fit(net, epochs, **kw):
    return fit(net, lambda: net.set_trainable("d"), _batches(0, 3), [_batches(1, 3)[0]],
               Recipe(epochs=epochs, **RECIPE), CPU, snapshot=lambda: net.domain_state_dict("d"),
               restore=lambda t: net.load_domain_state_dict("d", t), forward_kw={"domain": "d"}, **kw)


def test_fit_ends_with_the_best_epochs_tensors(monkeypatch):
    net = _domain_net()
    scripted = ScriptedAccuracy(net, {"d": [50.0, 90.0, 60.0]})
    monkeypatch.setattr("mdl.core.training.accuracy", scripted)
    result = _fit(net, 3)
    assert (result.best_epoch, result.best_accuracy) == (2, 90.0)
    assert [h["val_accuracy"] for h in result.history] == [50.0, 90.0, 60.0]
    epoch = scripted.seen
    assert len(epoch) == 3 and not _equal(epoch[1], epoch[2])  # the last epoch did move the tensors
    assert _equal(_state(net), epoch[1])


def test_fit_keeps_the_best_epoch_across_a_resume(monkeypatch, tmp_path):
    """Best at epoch 2, the run dies evaluating epoch 3; the resumed run's later epochs score lower, so
    the tensors it ends with are epoch 2's, which only the checkpoint still holds."""
    net = _domain_net()
    first = ScriptedAccuracy(net, {"d": [50.0, 90.0, Killed()]})
    monkeypatch.setattr("mdl.core.training.accuracy", first)
    checkpoint = Checkpoint(tmp_path / "run", {"test": "best epoch"})
    with pytest.raises(Killed):
        _fit(net, 4, checkpoint=checkpoint)
    best = first.seen[1]

    net = _domain_net()  # a fresh process: only the checkpoint carries the run
    second = ScriptedAccuracy(net, {"d": [60.0, 70.0]})
    monkeypatch.setattr("mdl.core.training.accuracy", second)
    result = _fit(net, 4, checkpoint=checkpoint, resume=True)
    assert (result.resumed_from, result.best_epoch, result.best_accuracy) == (2, 2, 90.0)
    assert [h["val_accuracy"] for h in result.history] == [50.0, 90.0, 60.0, 70.0]
    assert len(second.seen) == 2 and not _equal(best, second.seen[-1])
    assert _equal(_state(net), best)


def test_fit_joint_ends_with_the_best_mean_epochs_tensors(monkeypatch):
    """Means 50, 67, 62.5: epoch 2. Domain a alone would pick epoch 1 (also the highest single score),
    b alone epoch 3, so only the mean over the domains gives epoch 2."""
    torch.manual_seed(0)
    net = create_network("resnet26", "bn", width=0.125, domains={"a": 3, "b": 4})
    scripted = ScriptedAccuracy(net, {"a": [90.0, 64.0, 50.0], "b": [10.0, 70.0, 75.0]})
    monkeypatch.setattr("mdl.core.joint.accuracy", scripted)
    train = {"a": _batches(0, 3), "b": _batches(1, 4)}
    val = {"a": [_batches(2, 3)[0]], "b": [_batches(3, 4)[0]]}
    result = fit_joint(net, joint_parameters(net, ["a", "b"]), train, val, Recipe(epochs=3, **RECIPE), CPU,
                       snapshot=net.state_dict, restore=net.load_state_dict)
    assert (result.best_epoch, result.best_mean_accuracy, result.best_accuracy) == (2, 67.0, {"a": 64.0, "b": 70.0})
    assert [h["val_mean_accuracy"] for h in result.history] == [50.0, 67.0, 62.5]
    epoch = scripted.seen[::2]  # two calls (a, b) per epoch, with nothing trained in between
    assert all(_equal(a, b) for a, b in zip(epoch, scripted.seen[1::2]))
    assert len(epoch) == 3 and not _equal(epoch[1], epoch[2])
    assert _equal(_state(net), epoch[1])
