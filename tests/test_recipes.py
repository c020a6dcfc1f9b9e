"""The papers' published recipes: weight-decay groups, dropout before the classifier, the references'
per-domain preprocessing, training on train+val; and through the CLI, what gets recorded and scored."""
from __future__ import annotations

import pytest
import torch
from _data_helpers import decathlon
from conftest import tree_digest

from mdl.core import create_network
from mdl.core.recipes import (PUBLISHED_RECIPES, REBUFFI_DECAY_1X1, REBUFFI_DECAY_3X3, Recipe, published_recipe,
                              weight_decay_groups)


def test_guo_groups_one_decay_rebuffi_groups_by_kernel():
    net = create_network("resnet26", method="parallel-adapter", domains={"d": 3}, width=0.125)
    params = net.set_trainable("d")
    (guo,) = weight_decay_groups(params, "guo", 3e-4)
    assert guo["weight_decay"] == 3e-4 and len(guo["params"]) == len(params)
    groups = weight_decay_groups(params, "rebuffi", 5e-4)
    by_decay = {g["weight_decay"]: g["params"] for g in groups}
    assert REBUFFI_DECAY_3X3 == REBUFFI_DECAY_1X1  # the README's example: both 1e-4, so one group holds both
    adapters = [t for k, t in net.domain_tensors("d").items() if k.endswith("adapter.weight")]
    assert len(adapters) == 25 and all(a.dim() == 4 and a.shape[-1] == 1 for a in adapters)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(adapters) <= ids(by_decay[REBUFFI_DECAY_1X1])
    head_and_norms = [t for k, t in net.domain_tensors("d").items()
                      if (k.startswith("head.") or k.endswith(("bn.weight", "bn.bias", "bn1.weight", "bn2.bias")))]
    assert ids(head_and_norms) <= ids(by_decay[5e-4])
    assert sum(len(g["params"]) for g in groups) == len(params)
    with pytest.raises(ValueError, match="unknown weight-decay grouping"):
        weight_decay_groups(params, "adamw", 1e-4)


def test_rebuffi_groups_reach_the_optimizer():
    """fit() builds SGD from the groups: the decay a parameter sees is its group's."""
    from mdl.core.training import DeviceSetup, fit

    torch.manual_seed(0)
    net = create_network("resnet26", method="bn", domains={"d": 2}, width=0.125)
    data = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))]
    seen = {}
    real_sgd = torch.optim.SGD

    def spy(groups, **kw):
        seen["groups"] = [(g["weight_decay"], len(g["params"])) for g in groups]
        return real_sgd(groups, **kw)
    torch.optim.SGD = spy
    try:
        fit(net, lambda: weight_decay_groups(net.set_trainable("d"), "rebuffi", 7e-4), data, None,
            Recipe(epochs=1, lr=0.01, weight_decay=0.0), DeviceSetup.resolve("cpu"),
            snapshot=lambda: net.domain_state_dict("d"), restore=lambda t: net.load_domain_state_dict("d", t),
            forward_kw={"domain": "d"})
    finally:
        torch.optim.SGD = real_sgd
    assert seen["groups"] == [(7e-4, len(net.trainable_parameters("d")))]  # bn: no kernels of its own


def test_dropout_before_the_classifier_in_training_only():
    torch.manual_seed(0)
    net = create_network("resnet26_dw", method="dw", domains={"gtsrb": 4, "dtd": 4}, width=0.125)
    net.set_head_dropout("gtsrb", 0.5)
    x = torch.randn(8, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        e1, e2 = net(x, "gtsrb"), net(x, "gtsrb")
        assert torch.equal(e1, e2)
        net.train()
        t1, t2 = net(x, "gtsrb"), net(x, "gtsrb")
        d1, d2 = net(x, "dtd"), net(x, "dtd")
    assert not torch.allclose(t1, t2)     # dropout active for gtsrb in training
    assert torch.allclose(d1, d2)         # dtd has none (BN in train mode is deterministic given the batch)
    with pytest.raises(ValueError, match="dropout"):
        net.set_head_dropout("gtsrb", 1.0)
    assert PUBLISHED_RECIPES["guo2019"].dropout == {"gtsrb": 0.5, "ucf101": 0.5, "daimlerpedcls": 0.5}
    assert PUBLISHED_RECIPES["guo2019"].weight_decay == {"svhn": 2e-4, "vgg-flowers": 1e-4}  # main.py, not the text
    with pytest.raises(ValueError, match="unknown recipe"):
        published_recipe("nope")
    with pytest.raises(ValueError, match="--train-on"):
        Recipe(epochs=1, train_on="val")


def test_reference_preprocessing_and_train_val_split(tmp_path):
    from mdl.workflows.common import loaders
    from mdl.core.data import open_source

    decathlon(tmp_path, "svhn", sizes=(6, 3, 3))
    dd = open_source(str(tmp_path), "svhn", image_size=16)
    assert not dd.flip and dd.crop == 14  # mdl's uniform policy: 64/72 of the image size
    whole = dd.with_crop(16)
    x, _ = next(iter(loaders(whole, 4, 0, 0)[1]))
    assert x.shape[-2:] == (16, 16) and whole.crop == 16
    train, val = loaders(dd, 64, 0, 0, train_on="train+val")
    assert val is None and len(train.dataset) == 18 + 9
    labels = torch.cat([y for _, y in train])
    assert torch.equal(labels.sort().values, torch.cat([dd.splits["train"].labels, dd.splits["val"].labels]).sort().values)


@pytest.mark.slow
def test_cli_guo_recipe_on_train_val_is_recorded_and_not_scored_on_val(tmp_path, mdl, home):
    from test_workflow_e2e import TOY, TRAIN, make_tree

    src = make_tree(tmp_path / "src", 4, 20, seed=1)
    data = tmp_path / "deca"
    decathlon(data, "gtsrb", sizes=(8, 4, 4))
    assert mdl("init", home=home).code == 0
    assert mdl("pretrain", "--data", str(src), "--name", "src", "--epochs", "1", *TOY, home=home).code == 0
    before = tree_digest(home)
    bad = mdl("add-domain", "gtsrb", "--data", str(data), "--train-on", "val", *TRAIN, home=home)
    assert bad.code == 2 and tree_digest(home) == before
    out = mdl("add-domain", "gtsrb", "--data", str(data), "--epochs", "2", "--recipe", "guo2019",
              "--train-on", "train+val", "--json", *TRAIN, home=home)
    assert out.code == 0, out.stderr
    assert out.json()["accuracy"] is None
    from mdl.registry.store import Registry
    v = Registry.open(home).domain_version("gtsrb")
    rec = v.config["recipe"]
    assert (rec["name"], rec["dropout"], rec["train_on"], rec["wd_groups"]) == ("guo2019", 0.5, "train+val", "guo")
    assert v.config["trained_on"] == "train+val" and len(v.config["history"]) == 2 and v.config["best_epoch"] == 2
    assert v.data["crop"] == v.data["image_size"] == 16  # no-flip domain fed whole under the reference policy
    score = mdl("score", "--json", home=home)
    assert score.code == 0, score.stderr
    row = next(r for r in score.json()["domains"] if r["name"] == "gtsrb")
    assert row["accuracy"] is None and row["trained_on"] == "train+val" and "not held out" in row["score_basis"]
    test = mdl("score", "--split", "test", "--results", str(tmp_path / "results.json"), "--json", home=home)
    assert test.code == 0, test.stderr
    side = (tmp_path / "results.json.mdl.json").read_text()
    assert '"trained_on": "train+val"' in side
