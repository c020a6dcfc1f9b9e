"""Mixed batches: the stacked single pass equals per-domain forwards; padding is -inf.

These tests guard the per-layer paths (slices, per-sample, folded per layer), which every trunk that
cannot run domain-folded takes; the whole-trunk fold is off here and tested in test_domain_fold.py."""
import pytest
import torch

from mdl.core import create_network
from mdl.core.nets import domain_fold, layers, wrappers


@pytest.fixture(autouse=True)
def _per_layer_paths(monkeypatch):
    monkeypatch.setattr(domain_fold, "ENABLED", False)

NAMES = ["a", "b", "c", "a", "c", "b", "b", "a"]


def make(arch, method):
    torch.manual_seed(0)
    width = 0.125 if not arch.startswith("timm/") else 1.0  # timm models come at their own size
    net = create_network(arch, method=method, domains={"a": 5, "b": 3, "c": 7}, width=width)
    with torch.no_grad():  # make every domain's tensors differ (BN stats included)
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if k.endswith("running_var") else t.add_(0.05 * torch.randn_like(t))
    return net.eval()


def check_against_single(net, x, out):
    assert out.shape == (len(NAMES), 7)
    for i, d in enumerate(NAMES):
        k = net.domains[d]
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(out[i, k:]).all() and (out[i, k:] < 0).all()


@pytest.mark.parametrize("mode", ["slices", "per-sample", "folded", "auto"])
@pytest.mark.parametrize("method", ["dw", "dw-sharing", "finetune", "classifier-only"])
def test_stacked_equals_per_domain(method, mode, monkeypatch):
    net = make("resnet26_dw", method)
    calls = {"per_sample_depthwise": [], "folded_depthwise": []}
    for name, seen in calls.items():
        monkeypatch.setattr(layers, name, lambda *a, real=getattr(layers, name), seen=seen, **kw: seen.append(1) or real(*a, **kw))
    monkeypatch.setattr(wrappers, "MIXED_DEPTHWISE", mode)
    layout = torch.channels_last if mode == "folded" else torch.contiguous_format  # folded: channels_last only
    net.to(memory_format=layout)
    x = torch.randn(len(NAMES), 3, 16, 16).contiguous(memory_format=layout)
    with torch.no_grad():
        out = net(x, domain=NAMES)
    check_against_single(net, x, out)
    # per-domain depthwise filters (24 in blocks + the stem): one grouped conv each in per-sample and folded
    # mode, and per-sample under auto here (8 images over 3 domains: fewer than PER_SAMPLE_BELOW each)
    owns_depthwise = method in ("dw", "finetune")
    assert len(calls["per_sample_depthwise"]) == (25 if owns_depthwise and mode in ("per-sample", "auto") else 0)
    assert len(calls["folded_depthwise"]) == (25 if owns_depthwise and mode == "folded" else 0)
    assert out.argmax(1).lt(torch.tensor([net.domains[d] for d in NAMES])).all()


@pytest.mark.parametrize("present", [("a", "b", "c"), ("c", "a")])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_auto_leaves_per_sample_once_each_domain_has_enough_images(monkeypatch, layout, present):
    """Enough images per domain: slices, or folded on channels_last stride-1 maps of <= 8x8 positions
    (with every domain in the batch, or a subset: the fold then takes the present domains' filters)."""
    net = make("resnet26_dw", "dw").to(memory_format=layout)
    calls = {"per_sample_depthwise": [], "folded_depthwise": []}
    for name, seen in calls.items():
        monkeypatch.setattr(layers, name, lambda *a, real=getattr(layers, name), seen=seen, **kw: seen.append(a[1].shape) or real(*a, **kw))
    names = [d for d in present for _ in range(wrappers.PER_SAMPLE_BELOW)] + [present[0]]
    names = names[1::2] + names[::2]  # unequal counts, shuffled: the fold pads the shorter domains
    x = torch.randn(len(names), 3, 32, 32).contiguous(memory_format=layout)
    with torch.no_grad():
        out = net(x, domain=names)
    assert calls["per_sample_depthwise"] == []
    folded = calls["folded_depthwise"]
    if layout == torch.channels_last:
        assert folded and all(s[-2] * s[-1] <= wrappers.FOLD_MAX_POSITIONS for s in folded)
    else:
        assert folded == []
    for i, d in enumerate(names):
        torch.testing.assert_close(out[i:i + 1, :net.domains[d]], net(x[i:i + 1], domain=d), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("slices", [[(0, 2), (2, 3), (3, 7)], [(0, 3), (3, 6), (6, 9)]], ids=["unequal", "equal"])
@pytest.mark.parametrize("stride,multiplier", [(1, 1), (2, 2)])
def test_folded_depthwise_equals_each_domains_conv(stride, multiplier, slices):
    """Unequal slices (zero-padded in the fold) or equal ones (one fold copy, one join), a channel
    multiplier, a bias, a stride; joined plain or with a per-sample affine."""
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(6, 6 * multiplier, 3, stride, 1, groups=6) for _ in range(3)]
    n = slices[-1][1]
    x = torch.randn(n, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.stack([c.weight for c in convs]).flatten(0, 1)
    b = torch.stack([c.bias for c in convs]).flatten()
    scale, shift = torch.randn(n, 6 * multiplier), torch.randn(n, 6 * multiplier)
    with torch.no_grad():
        got = layers.folded_depthwise(convs[0], x, w, b, slices)
        affine = layers.folded_depthwise(convs[0], x, w, b, slices, scale, shift)
        want = torch.cat([c(x[s:e]) for c, (s, e) in zip(convs, slices)])
    assert got.is_contiguous(memory_format=torch.channels_last) and affine.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(affine, want * scale[:, :, None, None] + shift[:, :, None, None], rtol=1e-5, atol=1e-5)


SIZES = {  # a domain with 0, 1 and many samples; sorted, reversed, interleaved
    "one-of-b": ["a", "a", "c", "b", "c", "a", "c"],
    "no-c": ["b", "a", "a", "b", "a"],
    "sorted": ["a", "a", "a", "b", "b", "c"],
    "reversed": ["c", "b", "b", "a", "a", "a"],
}


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("arch", ["resnet26_dw", "timm/mobilenetv3_large_100", "timm/tf_efficientnet_lite0",
                                  "timm/convnext_atto"])
@pytest.mark.parametrize("case", list(SIZES))
def test_mixed_equals_per_domain_for_any_counts_and_order(arch, case, layout):
    names = SIZES[case]
    net = make(arch, "dw").to(memory_format=layout)  # channels_last: the 1x1 per-domain convs run as matmuls
    x = torch.randn(len(names), 3, 32, 32).contiguous(memory_format=layout)
    with torch.no_grad():
        out = net(x, domain=names)
        idx = torch.tensor([list(net.domains).index(n) for n in names])
        indexed = net(x, domain=idx)
    present = max(net.domains[d] for d in names)
    assert out.shape == (len(names), present)  # padded to the widest head of the batch's domains
    for i, d in enumerate(names):
        k = net.domains[d]
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(out[i, k:]).all()
        torch.testing.assert_close(indexed[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isinf(indexed[i, k:]).all()


def test_mixed_batch_does_each_images_work_once():
    """FLOPs of a mixed batch (names or an index tensor) equal a one-domain batch's: no domain's layers
    run on another domain's samples."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    idx = torch.tensor([list(net.domains).index(n) for n in NAMES])
    flops = {}
    with torch.no_grad():
        for key, domain in (("single", "c"), ("names", NAMES), ("indexed", idx)):
            with FlopCounterMode(display=False) as fc:
                net(x, domain=domain)
            flops[key] = fc.get_total_flops()
    # the heads differ in width (5/3/7 classes vs 7 for all): a few hundred FLOPs of several million
    assert abs(flops["names"] - flops["single"]) < 1e-3 * flops["single"]
    assert abs(flops["indexed"] - flops["single"]) < 1e-3 * flops["single"]


@pytest.mark.parametrize("method", ["bn", "parallel-adapter", "series-adapter"])
def test_grouped_mixed_batch_for_other_methods(method):
    net = make("resnet26", method)
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        check_against_single(net, x, net(x, domain=NAMES))


def test_mixed_batch_in_train_mode_uses_per_domain_batch_stats():
    net = make("resnet26_dw", "dw").train()
    x = torch.randn(len(NAMES), 3, 16, 16)
    out = net(x, domain=NAMES)
    out[torch.isfinite(out)].sum().backward()  # differentiable through the padding
    assert net.domain_tensors("c")["head.weight"].grad is not None


def test_stacked_channels_last_equals_nchw():
    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        a = net(x, domain=NAMES)
        b = net(x.contiguous(memory_format=torch.channels_last), domain=NAMES)
    fin = torch.isfinite(a)
    assert torch.equal(fin, torch.isfinite(b))
    torch.testing.assert_close(b[fin], a[fin], rtol=1e-4, atol=1e-4 * a[fin].abs().max().item())


def test_stack_cache_sees_in_place_updates():
    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        net(x, domain=NAMES)  # fills the cache
        net.domain_tensors("b")["s1.b0.dw1.weight"].mul_(2.0)
        net.domain_tensors("c")["s2.b1.bn2.running_var"].mul_(3.0)
        check_against_single(net, x, net(x, domain=NAMES))


def _replace_parameter(net):
    conv = net.wrappers["s1.b0.dw1"].domains["b"]
    conv.weight = torch.nn.Parameter(conv.weight.detach() * 2.0)


def _load_domain(net):
    net.load_domain_state_dict("c", {k: v * 1.5 for k, v in net.domain_state_dict("c").items()})


def _train_step(net):
    net.train()
    params = net.set_trainable("a")
    net(torch.randn(4, 3, 16, 16), domain="a").logsumexp(1).sum().backward()
    torch.optim.SGD(params, lr=0.5).step()
    net.eval()


@pytest.mark.parametrize("static", [False, True], ids=["checked", "static"])
@pytest.mark.parametrize("change", [_replace_parameter, _load_domain, _train_step,
                                    lambda net: net.to(torch.float64), lambda net: net.add_domain("d", 4)],
                         ids=["parameter-replaced", "load-domain", "train-step", "to-float64", "add-domain"])
def test_stacks_see_every_change_between_forwards(change, static):
    """The stacks are checked once per forward (stacks.Stacks.refresh): whatever changes a domain's tensors
    between two mixed forwards shows in the second (a stale stack gives another domain's or the old
    values, or fails on the new dtype or domain); under assume_static, every change made through the
    network's own methods (or a module registration) still does."""
    net = make("resnet26_dw", "dw").assume_static(static)
    x = torch.randn(len(NAMES) + 1, 3, 16, 16)
    with torch.no_grad():
        net(x[:-1], domain=NAMES)  # fills the stacks
    change(net)
    names = NAMES + ["d" if "d" in net.domains else "a"]
    x = x.to(next(net.parameters()).dtype)
    with torch.no_grad():
        out = net(x, domain=names)
        for i, d in enumerate(names):
            ref = net(x[i:i + 1], domain=d)
            torch.testing.assert_close(out[i:i + 1, :net.domains[d]], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_one_gather_for_every_norm_and_stacks_built_once(monkeypatch):
    """A mixed eval forward gathers its samples' norm affines with ONE index_select (not two per norm),
    and the stacked tables are built on the first forward only, until a tensor changes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mdl.core.nets import stacks

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    builds = []
    real = stacks.Stacks._affine_table
    monkeypatch.setattr(stacks.Stacks, "_affine_table", lambda self: builds.append(1) or real(self))
    net = make("resnet26_dw", "dw")
    x = torch.randn(len(NAMES), 3, 16, 16)
    depthwise = sum(isinstance(w, wrappers.PerDomainDepthwise) for w in net.wrappers.values())
    with torch.no_grad():
        for _ in range(3):
            with Count() as count:
                net(x, domain=NAMES)
            # one for every norm's rows, one per depthwise layer for its per-sample filters (this batch runs
            # them per sample); advanced indexing only for the sort and unsort
            assert count.ops.count("index_select") == 1 + depthwise
            assert count.ops.count("index") == 2
        assert builds == [1]
        net.domain_tensors("a")["s1.b0.bn1.weight"].add_(1.0)
        net(x, domain=NAMES)
    assert builds == [1, 1]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("arch,pairs", [("timm/tf_efficientnet_lite0", 16), ("timm/mobilenetv3_large_100", 15),
                                        ("timm/convnext_atto", 0), ("resnet26_dw", 0)])
@pytest.mark.parametrize("extra", [["a"], []], ids=["unequal", "equal"])  # 5, 4, 4 or 4, 4, 4 images
def test_depthwise_joins_carry_the_next_norms_affine(arch, pairs, layout, extra, monkeypatch):
    """Where a per-domain BN alone consumes a per-domain depthwise conv (read off the trunk's fx graph),
    the conv applies the BN's per-sample affine while joining its slices or fold; outputs unchanged.
    ConvNeXt's depthwise convs feed LayerNorms (not an affine), ResNet-26's feed a shared pointwise conv."""
    joins = []
    real, fold = layers.affine_into, layers.folded_depthwise
    monkeypatch.setattr(layers, "affine_into", lambda *a: joins.append(1) or real(*a))
    monkeypatch.setattr(layers, "folded_depthwise",  # a fold whose join applies an affine
                        lambda *a: (joins.append(1) if len(a) == 7 else None) or fold(*a))
    net = make(arch, "dw").to(memory_format=layout)
    names = [d for d in ("a", "b", "c") for _ in range(wrappers.PER_SAMPLE_BELOW)] + extra
    names = names[::2] + names[1::2]
    x = torch.randn(len(names), 3, 32, 32).contiguous(memory_format=layout)
    with torch.no_grad():
        out = net(x, domain=names)
        fused = [p for p, w in net.wrappers.items() if isinstance(w, wrappers.PerDomainDepthwise) and w.fused_norm is not None]
        assert len(fused) == pairs and len(joins) == pairs
        for i, d in enumerate(names):
            ref = net(x[i:i + 1], domain=d)
            torch.testing.assert_close(out[i:i + 1, :net.domains[d]], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_fusion_pairs_only_a_norm_that_alone_consumes_the_conv():
    from torch import nn

    from mdl.core.nets.fusion import sole_norm_consumers

    class Net(nn.Module):
        def __init__(self, shortcut: bool):
            super().__init__()
            self.dw, self.bn, self.dw2, self.bn2, self.shortcut = (nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                                                   nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                                                   nn.BatchNorm2d(4), shortcut)

        def forward(self, x):
            y = self.dw(x)
            z = self.bn(y)
            z = z + y if self.shortcut else z  # a second consumer of dw's output
            return self.bn2(self.dw2(z))

    def pairs(net):
        return sole_norm_consumers(net, (nn.Conv2d,), (nn.BatchNorm2d,), ())

    assert pairs(Net(False)) == {"dw": "bn", "dw2": "bn2"}
    assert pairs(Net(True)) == {"dw2": "bn2"}

    class Branchy(Net):
        def forward(self, x):
            return self.bn(self.dw(x)) if x.sum() > 0 else x  # control flow on a tensor: fx cannot trace it

    assert pairs(Branchy(False)) == {}


# --- the per-sample layout (layers.batch_in_channels) -------------------------------------------------
def _hwbc(b, c, h, w):
    return torch.randn(h, w, b, c).permute(2, 3, 0, 1)


def test_batch_in_channels_is_the_folded_layout_only():
    x = _hwbc(3, 4, 5, 6)
    assert layers.batch_in_channels(x)
    folded = layers.fold_batch(x)
    assert folded.shape == (1, 12, 5, 6) and folded.is_contiguous(memory_format=torch.channels_last)
    assert folded.data_ptr() == x.data_ptr()
    torch.testing.assert_close(layers.unfold_batch(folded, 3), x, rtol=0, atol=0)
    for other in (x.contiguous(), x.contiguous(memory_format=torch.channels_last), x[:1], x[:, :2]):
        assert not layers.batch_in_channels(other)
    assert layers.matmul_layout(x) and layers.matmul_layout(x.contiguous(memory_format=torch.channels_last))
    assert not layers.matmul_layout(x.contiguous()) and layers.matmul_layout(torch.randn(3, 4, 1, 1))  # 1x1 maps: any
    conv = torch.nn.Conv2d(4, 5, 1)
    for t in (x, x.contiguous(memory_format=torch.channels_last), torch.randn(3, 4, 1, 1)):
        torch.testing.assert_close(layers.pointwise_linear(conv, t), conv(t.contiguous()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "folded"])
@pytest.mark.parametrize("same", [False, True])  # timm's Conv2dSame pads at run time
def test_per_sample_depthwise_keeps_the_folded_layout(layout, same):
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    conv = (Conv2dSame if same else torch.nn.Conv2d)(6, 12, 3, stride=2, padding=0 if same else 1, groups=6, bias=True)
    b = 4
    x = torch.randn(b, 6, 9, 9)
    x = {"nchw": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
         "folded": x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)}[layout]
    w, bias = torch.randn(b, 12, 1, 3, 3), torch.randn(b, 12)
    ref = torch.cat([torch.nn.functional.conv2d(layers.conv_geometry(conv, x[i:i + 1])[0], w[i], bias[i], 2,
                                                layers.conv_geometry(conv, x[i:i + 1])[1], 1, 6) for i in range(b)])
    plain = layers.per_sample_depthwise(conv, x, w, bias)
    kept = layers.per_sample_depthwise(conv, x, w, bias, keep_folded=True)
    torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept, ref, rtol=1e-5, atol=1e-5)
    assert layers.batch_in_channels(kept)
    assert plain.is_contiguous() if layout == "nchw" else layers.channels_last(plain)


def test_shared_pointwise_is_the_trunks_own_conv_with_the_layout_kept():
    net = make("timm/tf_efficientnet_lite0", "dw")
    plain = create_network("timm/tf_efficientnet_lite0", method="dw", domains={"a": 5})
    shared = [p for p, m in net.trunk.named_modules() if isinstance(m, wrappers.SharedPointwise)]
    assert shared and all(".domains." not in p for p in shared)  # per-domain copies (conv_head) stay plain
    assert all(layers.is_plain_pointwise(net.trunk.get_submodule(p)) for p in shared)
    assert not any(isinstance(m, wrappers.SharedPointwise) for w in net.wrappers.values() for m in w.domains.modules())
    assert list(net.shared_state_dict()) == list(plain.shared_state_dict())
    conv = net.trunk.get_submodule(shared[0])
    x = _hwbc(3, conv.in_channels, 4, 4)
    ref = torch.nn.functional.conv2d(x.contiguous(), conv.weight, conv.bias)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)  # outside a mixed forward: the conv
        net.router.stacks = object()  # inside one (eval, eager, no autograd): a matmul keeping the layout
        try:
            y = conv(x)
        finally:
            net.router.clear()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert layers.batch_in_channels(y)


@pytest.mark.parametrize("arch", ["resnet26_dw", "timm/tf_efficientnet_lite0", "timm/mobilenetv3_large_100"])
def test_few_images_per_domain_stay_folded_between_per_sample_convs(arch, monkeypatch):
    """A channels_last mixed batch under PER_SAMPLE_BELOW images per domain: every shared 1x1 conv after
    the first per-sample depthwise conv gets the folded layout (no copy back to channels_last between
    them), and the outputs still equal the per-domain forwards."""
    net = make(arch, "dw").to(memory_format=torch.channels_last)
    seen = []
    for p, m in net.trunk.named_modules():
        if isinstance(m, wrappers.SharedPointwise):
            m.register_forward_pre_hook(lambda m, a, p=p: seen.append((p, layers.batch_in_channels(a[0]),
                                                                       a[0].shape[-2] * a[0].shape[-1])))
    x = torch.randn(len(NAMES), 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = net(x, domain=NAMES)
        first = next((i for i, (_, f, _) in enumerate(seen) if f), None)
        assert first is not None, "no shared 1x1 conv saw the per-sample layout"
        # after the first: all of them on maps (SE convs on pooled [B, C, 1, 1] maps are layout-free)
        assert [p for p, f, hw in seen[first:] if hw > 1 and not f] == []
        seen.clear()
        net(x[:1], domain=NAMES[0])  # one domain: the trunk as it is
        assert seen and not any(f for _, f, _ in seen)
    check_against_single(net, x, out)


def test_resnet26_shortcut_on_the_folded_layout():
    from mdl.core.nets.trunks.resnet26 import shortcut

    x = _hwbc(3, 4, 6, 6)
    for downsample, cout in ((True, 8), (False, 8), (True, 4)):
        y = shortcut(x, cout, downsample)
        torch.testing.assert_close(y, shortcut(x.contiguous(), cout, downsample), rtol=0, atol=1e-6)
        assert layers.batch_in_channels(y)


def test_filter_share_is_read_once_per_input_shape():
    """Per image: depthwise filter size over depthwise input size; ResNet-26's 3x3 filters on large maps
    are a far smaller share than Lite0's 5x5 ones on small maps; larger images, smaller shares."""
    res, lite = make("resnet26_dw", "dw"), make("timm/tf_efficientnet_lite0", "dw")
    calls = []
    lite.trunk.register_forward_pre_hook(lambda m, a: calls.append(1))
    x32, x64 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    shares = [lite.filter_share(x32), lite.filter_share(x32), lite.filter_share(x64)]
    assert len(calls) == 2 and shares[0] == shares[1] > shares[2] > 0  # one probe per shape
    assert res.filter_share(x64) < 0.2 * shares[2]
    assert make("resnet26", "bn").filter_share(x64) == float("inf")  # no per-domain depthwise convs


@pytest.mark.parametrize("share_below,per_sample", [(float("inf"), True), (0.0, False)])
def test_auto_goes_per_sample_at_more_images_when_filters_are_a_small_share(monkeypatch, share_below, per_sample):
    net = make("resnet26_dw", "dw").to(memory_format=torch.channels_last)
    monkeypatch.setattr(wrappers, "PER_SAMPLE_FILTER_SHARE", share_below)
    calls = []
    real = layers.per_sample_depthwise
    monkeypatch.setattr(layers, "per_sample_depthwise", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    names = [d for d in ("a", "b", "c") for _ in range(wrappers.PER_SAMPLE_BELOW)][::-1]  # enough images each
    x = torch.randn(len(names), 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = net(x, domain=names)
    assert (len(calls) == 25) == per_sample and (len(calls) == 0) == (not per_sample)
    for i, d in enumerate(names):
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :net.domains[d]], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("arch", ["resnet26_dw", "timm/tf_efficientnet_lite0"])
def test_assume_static_skips_the_per_tensor_check(arch):
    """A static network does not walk its tensors at every forward: an in-place edit behind its back is
    not seen (the promise it was given) until assume_static(False), and a checked network sees it at once."""
    net = make(arch, "dw").assume_static()
    x = torch.randn(len(NAMES), 3, 16, 16)
    with torch.no_grad():
        before = net(x, domain=NAMES)
        norm = net.wrappers[next(p for p, w in net.wrappers.items() if isinstance(w, wrappers.PerDomainNorm))]
        for t in norm.domains["b"].parameters():
            t.mul_(3.0).add_(0.5)
        stale = net(x, domain=NAMES)
        net.assume_static(False)
        fresh = net(x, domain=NAMES)
    torch.testing.assert_close(stale, before)
    assert not torch.allclose(fresh, before)
    check_against_single(net, x, fresh)
