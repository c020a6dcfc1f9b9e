"""The transfer recipe: chosen by the trunk's kind and recorded; per-group learning rates, LP-FT probe
epochs and the BN statistics policies do what they say; AdamW state survives a resume."""
from __future__ import annotations

import pytest
import torch
from _data_helpers import idx_folder

from mdl.core import create_network
from mdl.core.bn_policy import reestimate
from mdl.core.recipes import PUBLISHED_RECIPES, Recipe, lr_groups, recipe_for_trunk, weight_decay_groups
from mdl.core.training import Checkpoint, DeviceSetup, fit, make_optimizer, set_lr

CPU = DeviceSetup.resolve("cpu")


def _net(method="dw", arch="resnet26_dw"):
    torch.manual_seed(0)
    return create_network(arch, method=method, domains={"d": 3}, width=0.125)


def _data(n=4, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 3, (batch,), generator=g)) for _ in range(n)]


def _fit(net, recipe, data, **kw):
    params = lambda: lr_groups(weight_decay_groups(net.set_trainable("d"), "guo", recipe.weight_decay),  # noqa: E731
                               net.new_parameters("d"), recipe)
    return fit(net, params, data, None, recipe, CPU, snapshot=lambda: net.domain_state_dict("d"),
               restore=lambda t: net.load_domain_state_dict("d", t), forward_kw={"domain": "d"},
               norms=lambda: net.domain_batchnorms("d"), **kw)


def _stats(net):
    return {k: v.clone() for k, v in net.domain_state_dict("d").items() if k.endswith(("running_mean", "running_var"))}


def test_recipe_is_chosen_by_the_trunks_kind():
    assert recipe_for_trunk({"pretrained_cfg": {"mean": [0.5] * 3}, "imported": True})[0] == "transfer"
    assert recipe_for_trunk({"image_size": 72})[0] == "mdl"                                   # pretrained here
    assert recipe_for_trunk({"imported": True, "reference_layout": "guo2019"})[0] == "mdl"   # the papers' own weights
    transfer = PUBLISHED_RECIPES["transfer"]
    assert transfer.domain_weight_decay("dtd", 10) == transfer.domain_weight_decay("x", 10**6)  # no dataset names
    assert PUBLISHED_RECIPES["mdl"].domain_weight_decay("dtd", 10) == 2e-3                       # the paper's table


def test_head_and_copied_tensors_get_their_own_lr_and_schedule():
    net = _net()
    recipe = Recipe(epochs=2, lr=0.01, head_lr=0.1, schedule="cosine", warmup=True)
    groups = lr_groups(weight_decay_groups(net.set_trainable("d"), "guo", 1e-4), net.new_parameters("d"), recipe)
    opt = make_optimizer(groups, recipe)
    head = {id(p) for p in net.head.domains["d"].parameters()}
    by_kind = {g["copied"]: g for g in opt.param_groups}
    assert {id(p) for p in by_kind[False]["params"]} == head and not head & {id(p) for p in by_kind[True]["params"]}
    set_lr(opt, recipe, epoch=0, step=1, steps=4)  # warm-up ramp 2/4 x cosine at 1/8 of training
    f = 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 8)).item()) * 0.5
    assert by_kind[True]["lr"] == pytest.approx(0.01 * f) and by_kind[False]["lr"] == pytest.approx(0.1 * f)
    set_lr(opt, recipe, epoch=1, step=3, steps=4)
    assert by_kind[False]["lr"] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()))
    step = Recipe(epochs=4, lr=0.1, warmup=False)
    assert [step.factor(e) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.01])


def test_probe_epoch_leaves_copied_tensors_bit_equal(tmp_path):
    net = _net()
    before = {k: v.clone() for k, v in net.domain_state_dict("d").items() if not k.startswith("head.")}
    head = net.domain_state_dict("d")["head.weight"].clone()
    ck = Checkpoint(tmp_path / "run", {"t": 1})
    recipe = Recipe(epochs=2, lr=1e-3, head_lr=1e-2, probe_epochs=1, bn_stats="keep", warmup=False)
    try:
        _fit(net, recipe, _data(), checkpoint=ck, train_mode=_stop_after_first_epoch(net))
    except _Stop:
        pass
    state, tensors = ck.load()
    assert state["epoch"] == 1
    cur = {k[4:]: v for k, v in tensors.items() if k.startswith("cur/")}
    assert all(torch.equal(cur[k], v) for k, v in before.items())  # momentum/decay never touched them
    assert not torch.equal(cur["head.weight"], head)
    whole = _net()
    _fit(whole, recipe, _data())  # the second epoch trains the copied tensors too
    after = whole.domain_state_dict("d")
    assert any(not torch.equal(after[k], v) for k, v in before.items() if not k.endswith(("running_mean", "running_var")))
    with pytest.raises(ValueError, match="--probe-epochs"):
        Recipe(epochs=2, probe_epochs=2)


class _Stop(Exception):
    pass


def _stop_after_first_epoch(net):
    calls = []

    def mode():
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        net.train()
    return mode


@pytest.mark.parametrize("method,arch", [("dw", "resnet26_dw"), ("finetune", "resnet26_dw"), ("bn", "resnet26")])
def test_keep_leaves_running_statistics_bit_equal_and_trains_affines(method, arch):
    net = _net(method, arch)
    before = _stats(net)
    affine = {k: v.clone() for k, v in net.domain_state_dict("d").items() if k.endswith("bn1.weight")}
    assert before and affine
    _fit(net, Recipe(epochs=2, lr=1e-3, bn_stats="keep"), _data())
    after = net.domain_state_dict("d")
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(not torch.equal(after[k], v) for k, v in affine.items())
    net_b = _net(method, arch)
    _fit(net_b, Recipe(epochs=1, lr=0.05, bn_stats="batch"), _data())
    assert any(not torch.equal(net_b.domain_state_dict("d")[k], v) for k, v in before.items())  # batch: they move


def test_adabn_statistics_are_the_one_pass_average_over_the_training_loader():
    net = _net()
    norms = net.domain_batchnorms("d")
    data = _data(n=3)
    seen = {id(m): [] for m in norms}
    hooks = [m.register_forward_hook(lambda m, inp, out: seen[id(m)].append(inp[0].detach().double())) for m in norms]
    assert reestimate(net, norms, data, CPU, domain="d") == 3
    for h in hooks:
        h.remove()
    for m in norms:
        xs = seen[id(m)]
        mean = torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0)
        var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0)
        torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert m.momentum == 0.1  # restored
    # through fit: adabn re-estimates first, then keeps them bit-equal through training
    net2 = _net()
    reestimate(net2, net2.domain_batchnorms("d"), data, CPU, domain="d")
    expected = _stats(net2)
    net3 = _net()
    _fit(net3, Recipe(epochs=1, lr=1e-3, bn_stats="adabn"), data)
    assert all(torch.equal(net3.domain_state_dict("d")[k], v) for k, v in expected.items())


def test_adamw_resume_matches_an_uninterrupted_run(tmp_path):
    recipe = Recipe(epochs=2, lr=1e-3, head_lr=1e-2, optimizer="adamw", weight_decay=0.01, bn_stats="keep")
    whole = _net()
    _fit(whole, recipe, _data())
    part = _net()
    ck = Checkpoint(tmp_path / "run", {"t": 2})
    with pytest.raises(_Stop):
        _fit(part, recipe, _data(), checkpoint=ck, train_mode=_stop_after_first_epoch(part))
    assert any("/exp_avg_sq" in k for k in ck.load()[1])
    resumed = _net()
    _fit(resumed, recipe, _data(), checkpoint=ck, resume=True)
    a, b = whole.domain_state_dict("d"), resumed.domain_state_dict("d")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_add_domain_on_the_imagenet_trunk_uses_and_records_the_transfer_recipe(tmp_path, mdl, home):
    root = idx_folder(tmp_path / "fm", n_train=40, n_test=6)
    assert mdl("init", home=home).code == 0
    res = mdl("add-domain", "fm", "--data", str(root), "--epochs", "1", "--image-size", "18", "--device", "cpu",
              "--json", home=home)
    assert res.code == 0, res.stderr
    assert "Recipe transfer (the trunk's weights were pretrained elsewhere (ImageNet)" in res.stderr
    cfg = mdl("show", "fm", "--json", home=home).json()["versions"][0]["config"]
    transfer = PUBLISHED_RECIPES["transfer"]
    assert cfg["recipe"]["name"] == "transfer" and "pretrained elsewhere" in cfg["recipe_reason"]
    assert cfg["recipe"]["bn_stats"] == transfer.bn_stats and cfg["recipe"]["lr"] == transfer.lr
    assert cfg["recipe"]["head_lr"] == pytest.approx(transfer.lr * transfer.head_lr_scale)
    res = mdl("add-domain", "fm", "--data", str(root), "--epochs", "1", "--image-size", "18", "--device", "cpu",
              "--recipe", "mdl", "--bn-stats", "adabn", "--json", home=home)
    assert res.code == 0, res.stderr
    cfg = [v for v in mdl("show", "fm", "--json", home=home).json()["versions"] if v["version"] == 2][0]["config"]
    assert cfg["recipe"]["name"] == "mdl" and cfg["recipe"]["bn_stats"] == "adabn" and cfg["recipe"]["lr"] == 0.1
    assert cfg["recipe_reason"] == "--recipe given"


def test_joint_train_on_the_imagenet_trunk_takes_the_transfer_recipe(tmp_path, mdl, home):
    """joint-train chooses like add-domain (bench/RESULTS.md T5: the transfer recipe 56.1 vs the paper's
    38.4 mean validation accuracy when training jointly from ImageNet Lite0)."""
    from mdl.registry.store import Registry

    a = idx_folder(tmp_path / "a", n_train=30, n_test=6)
    b = idx_folder(tmp_path / "b", n_train=30, n_test=6, seed=1)
    assert mdl("init", home=home).code == 0
    assert mdl("trunk", "import", "--image-size", "18", home=home).code == 0
    res = mdl("joint-train", str(a), str(b), "--name", "ja", "--name", "jb", "--epochs", "1", "--device", "cpu",
              "--batch-size", "16", home=home)
    assert res.code == 0, res.stderr
    assert "Recipe transfer (the trunk's weights were pretrained elsewhere" in res.stderr
    joint = [t for t in Registry.open(home).trunks() if t.version == 2][0]
    assert joint.config["recipe"]["name"] == "transfer" and joint.config["recipe"]["bn_stats"] == "keep"
    assert joint.config["recipe"]["lr"] == PUBLISHED_RECIPES["transfer"].lr
