"""Domain-folded mixed batches (domain_fold.py): the whole trunk on [n, D*C, H, W] equals per-domain forwards."""
import pytest
import torch
import torch.fx as fx
from torch import nn

from mdl.core import create_network
from mdl.core.nets import domain_fold, wrappers

LITE0, MNV3 = "timm/tf_efficientnet_lite0", "timm/mobilenetv3_large_100"
DOMAINS = {"a": 5, "b": 3, "c": 7, "d": 2}


def make(arch, method="dw"):
    torch.manual_seed(0)
    net = create_network(arch, method=method, domains=DOMAINS)
    with torch.no_grad():  # every domain's tensors differ (BN statistics included)
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if k.endswith("running_var") else t.add_(0.05 * torch.randn_like(t))
    return net.eval()


def count_entries(monkeypatch):
    seen = []
    real = domain_fold.Fold.enter
    monkeypatch.setattr(domain_fold.Fold, "enter", lambda self, x: seen.append(self.entered) or real(self, x))
    return seen


def check(net, x, names, out):
    assert out.shape == (len(names), max(net.domains[d] for d in set(names)))
    for i, d in enumerate(names):
        k = net.domains[d]
        ref = net(x[i:i + 1], domain=d)
        torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert torch.isneginf(out[i, k:]).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("names", [
    list("abcd") * 3,                           # equal slices, sorted order interleaved
    list("dcba"),                               # one image per domain, reversed order
    list("aabbbcc") + ["a"],                    # unequal slices (zero-padded slots), d absent
    list("cacaca"),                             # a subset of the domains, equal slices
])
@pytest.mark.parametrize("arch,method", [(LITE0, "dw"), (MNV3, "dw"), (LITE0, "finetune")])
def test_folded_equals_per_domain(arch, method, names, layout, monkeypatch):
    net = make(arch, method).to(memory_format=layout)
    assert net.foldable()
    entries = count_entries(monkeypatch)
    x = torch.randn(len(names), 3, 32, 32).contiguous(memory_format=layout)
    with torch.no_grad():
        out = net(x, domain=names)
    assert entries and entries[0] is False and all(entries[1:])  # folded once, by the first per-domain module
    check(net, x, names, out)


@pytest.mark.parametrize("static", [False, True])
def test_fold_follows_changed_tensors(static):
    """A stack built for one forward is rebuilt after a domain's tensors change in place (through
    load_domain_state_dict when the network was told to assume static tensors)."""
    net = make(LITE0).assume_static(static)
    x = torch.randn(4, 3, 32, 32)
    names = list("abcd")
    with torch.no_grad():
        net(x, domain=names)
        if static:
            net.load_domain_state_dict("b", {k: v + 0.1 for k, v in net.domain_state_dict("b").items()})
        else:
            for t in net.domain_tensors("b").values():
                t.add_(0.1)
        out = net(x, domain=names)
    check(net, x, names, out)


def test_no_fold_outside_eager_eval_or_when_padding_wastes_too_much(monkeypatch):
    net = make(LITE0)
    entries = count_entries(monkeypatch)
    x = torch.randn(8, 3, 32, 32)
    lopsided = list("aaaaaab") + ["c"]  # 3 domains x 6 slots for 8 images: over FOLD_WASTE
    with torch.no_grad():
        out = net(x, domain=lopsided)
    assert entries == []
    check(net, x, lopsided, out)
    net(x, domain=list("abcd") * 2)  # autograd on: the per-layer path
    monkeypatch.setattr(wrappers, "MIXED_DEPTHWISE", "slices")  # an explicit per-layer mode
    with torch.no_grad():
        net(x, domain=list("abcd") * 2)
    assert entries == []


def test_plan_waste():
    assert domain_fold.plan([(0, 2), (2, 4)], None).n == 2
    assert domain_fold.plan([(0, 3), (3, 4)], None).n == 3  # 6 slots for 4 images: 1.5, allowed
    assert domain_fold.plan([(0, 4), (4, 5)], None) is None  # 8 slots for 5 images


@pytest.mark.parametrize("arch,method", [("resnet26_dw", "dw"), (LITE0, "bn"), (LITE0, "parallel-adapter"),
                                         (LITE0, "classifier-only")])
def test_trunks_and_methods_that_do_not_qualify(arch, method):
    """fx cannot trace ResNet-26 (its shortcut branches on the layout); a shared depthwise conv, an
    adapter or a head alone are not modules the folded layout knows."""
    assert not create_network(arch, method=method, domains=DOMAINS, width=0.25 if arch == "resnet26_dw" else 1.0).foldable()


class _Toy(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.norm, self.conv, self.head, self.op = nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.Linear(4, 2), op

    def forward(self, x):
        y = self.op(self.conv(self.norm(x)), x)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("op,ok", [
    (lambda y, x: y + 1, True),
    (lambda y, x: y * torch.sigmoid(y), True),
    (lambda y, x: y + x, False),                       # reads the input from before the fold
    (lambda y, x: torch.cat([y, y], 1)[:, :4], False),  # channel semantics
    (lambda y, x: y.softmax(1), False),
])
def test_foldable_reads_the_graph(op, ok):
    roles = {nn.BatchNorm2d: "norm", nn.Conv2d: "shared", nn.Linear: "head"}
    toy = _Toy(op)
    graph = fx.symbolic_trace(toy).graph
    assert domain_fold.foldable(graph, dict(toy.named_modules()), lambda m: roles.get(type(m))) is ok


def test_a_shared_conv_is_never_the_entry():
    """The fold starts at the first per-domain module: a value from before it read later disqualifies."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.head((self.norm(y) + y).mean((2, 3)))

    roles = {nn.BatchNorm2d: "norm", nn.Conv2d: "shared", nn.Linear: "head"}
    toy = Shared()
    assert not domain_fold.foldable(fx.symbolic_trace(toy).graph, dict(toy.named_modules()), lambda m: roles.get(type(m)))


@pytest.mark.parametrize("arch,method,depthwise,pointwise", [
    (LITE0, "dw", 16, 1),         # every conv_dw -> bn2, and conv_head -> bn2 of the trunk
    (MNV3, "dw", 15, 0),          # conv_head feeds no BN (an activation)
    (LITE0, "finetune", 16, 32),  # every per-domain 1x1 conv of the blocks feeds its BN, and conv_head
])
def test_fold_carries_a_sole_consumer_bn_in_the_conv(arch, method, depthwise, pointwise, monkeypatch):
    """In a fold, a per-domain conv whose only consumer is a per-domain eval BN runs with that BN folded
    into its stacked filters (scale) and bias (shift): the BN applies only its tail (activation), so the
    folded affine runs for the other norms alone; outputs unchanged (equal and unequal slices)."""
    net = make(arch, method)
    affines = []
    real = domain_fold.affine
    monkeypatch.setattr(domain_fold, "affine", lambda *a: affines.append(1) or real(*a))
    names = list("abcdabcdab")
    x = torch.randn(len(names), 3, 32, 32)
    with torch.no_grad():
        out = net(x, domain=names)
    fused = {type(w).__name__: 0 for w in net.wrappers.values()}
    for w in net.wrappers.values():
        fused[type(w).__name__] += w.fused_norm is not None
    assert (fused["PerDomainDepthwise"], fused.get("PerDomain", 0)) == (depthwise, pointwise)
    norms = sum(1 for w in net.wrappers.values() if wrappers.fold_role(w) == "norm")
    assert len(affines) == norms - depthwise - pointwise
    check(net, x, names, out)
    affines.clear()
    with torch.no_grad():  # the folded stacks follow a changed BN (its scale is in the conv's filters)
        for t in net.wrappers[next(p for p, w in net.wrappers.items() if w.fused_norm is not None)].fused_norm.domains["b"].parameters():
            t.mul_(1.5)
        out = net(x, domain=names)
    check(net, x, names, out)


def _same(c, k, stride):
    from timm.layers import Conv2dSame
    return Conv2dSame(c, c, k, stride=stride, groups=c, bias=False)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("make_conv", [
    lambda: _same(6, 3, 1), lambda: _same(6, 5, 1), lambda: _same(6, 3, 2), lambda: _same(6, 5, 2),
    lambda: nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False), lambda: nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False),
    lambda: nn.Conv2d(6, 6, 3, padding=0, groups=6, bias=False),
], ids=["same3", "same5", "same3s2", "same5s2", "pad2", "pad1s2", "valid"])
def test_unpadded_filters_compute_what_the_conv_does(make_conv, size):
    """The filters and padding a folded depthwise conv runs with (no padded copy of the input; taps
    that read padding alone cut off; timm's lopsided "same" padding as a zero tap) give the conv's output."""
    from mdl.core.nets import layers
    torch.manual_seed(0)
    conv = make_conv()
    x = torch.randn(2, 6, size, size + 1)
    if size + 2 * conv.padding[0] < conv.kernel_size[0] and type(conv) is nn.Conv2d:
        pytest.skip("the conv itself rejects an input smaller than its filter")
    ref = conv(x)
    got = layers.unpadded_filters(conv, tuple(x.shape[-2:]), conv.weight)
    assert got is not None
    weight, padding = got
    torch.testing.assert_close(torch.nn.functional.conv2d(x, weight, None, conv.stride, padding, 1, 6), ref)
    assert weight.shape[-2] <= conv.kernel_size[0] + 1 and weight.shape[-2] <= 2 * size + 1  # cut to its reach


def test_unpadded_filters_leave_other_geometries_alone():
    from mdl.core.nets import layers
    assert layers.unpadded_filters(nn.Conv2d(4, 4, 3, padding="same", groups=4), (8, 8), torch.zeros(4, 1, 3, 3)) is None
    assert layers.unpadded_filters(nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4), (8, 8), torch.zeros(4, 1, 3, 3)) is None
