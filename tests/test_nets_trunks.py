"""Any depthwise-separable network is a trunk: timm families (EfficientNet-Lite, MobileNetV3, ConvNeXt)
reproduce the timm model's logits as a one-domain network, run mixed batches in one pass equal to
per-domain forwards, and host the soft-sharing gate. Lite0's per-method parameter counts are stated."""
import pytest
import torch
import torch.nn.functional as F

from mdl.core import create_network

# (timm model, input size): small inputs keep this fast; ConvNeXt's stride-32 stem needs 32 px.
FAMILIES = [("tf_efficientnet_lite0", 32), ("mobilenetv3_small_050", 32), ("convnext_atto", 32)]
NAMES = ["a", "b", "c", "a", "c", "b"]


def timm_model(name):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7)
    with torch.no_grad():  # non-trivial norm statistics and affines, so a mix-up would show
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
            elif isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return model.eval()


def one_domain_net(name, method="dw"):
    model = timm_model(name)
    net = create_network(f"timm/{name}", method=method, domains={})
    net.load_trunk_state_dict(model.state_dict())
    head = model.get_classifier()
    net.add_domain("src", 7)
    sd = net.domain_state_dict("src")
    sd.update({"head.weight": head.weight.detach(), "head.bias": head.bias.detach()})
    net.load_domain_state_dict("src", sd)
    return model, net.eval()


@pytest.mark.parametrize("name,size", FAMILIES)
@pytest.mark.parametrize("method", ["dw", "finetune", "bn"])
def test_one_domain_network_reproduces_timm_logits(name, size, method):
    model, net = one_domain_net(name, method)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "src"), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name,size", FAMILIES)
def test_stacked_mixed_batch_equals_per_domain_forwards(name, size):
    _, net = one_domain_net(name)
    for d in ("a", "b", "c"):  # new domains start from the trunk; make each one differ
        net.add_domain(d, 3 + len(d) + ord(d) % 4)
        with torch.no_grad():
            for k, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if k.endswith("running_var") else t.add_(0.05 * torch.randn_like(t))
    net.eval()
    x = torch.randn(len(NAMES), 3, size, size)
    with torch.no_grad():
        out = net(x, domain=NAMES)
        for i, d in enumerate(NAMES):
            k = net.domains[d]
            ref = net(x[i:i + 1], domain=d)
            torch.testing.assert_close(out[i:i + 1, :k], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
            assert torch.isinf(out[i, k:]).all()


def test_lite0_parameter_counts_per_method():
    """EfficientNet-Lite0 (timm tf_efficientnet_lite0): 4,652,008 parameters with its 1000-class head,
    3,371,008 without. 16 depthwise convs (182,016), 49 BN layers (42,016 scale+bias), the last pointwise
    conv conv_head 320->1280 (409,600), one dense 3x3 conv (the stem, 864). A 10-class head: 12,810."""
    head = 1280 * 10 + 10
    dw_own = 182_016 + 42_016 + 409_600
    expected = {  # method: (shared, own without head)
        "dw": (3_371_008 - dw_own, dw_own),                      # 633,632: 13.6% of the ImageNet network
        "dw-sharing": (182_016, 3_371_008 - 182_016),
        "bn": (3_371_008 - 42_016, 42_016),
        "classifier-only": (3_371_008, 0),
        "finetune": (0, 3_371_008),
        "parallel-adapter": (3_371_008 - 42_016, 42_016 + 32 * 3),  # a 1x1 beside the stem: 3 -> 32
        "series-adapter": (3_371_008 - 42_016, 42_016 + 32 * 32 + 2 * 32),
    }
    for method, (shared, own) in expected.items():
        net = create_network("timm/tf_efficientnet_lite0", method=method, domains={"d": 10})
        counts = net.parameter_counts()
        assert (counts["shared"], counts["domains"]["d"]) == (shared, own + head), method
    assert abs(dw_own / 4_652_008 - 0.1362) < 1e-3


def test_gate_trains_on_lite0_and_touches_only_the_gate():
    _, net = one_domain_net("tf_efficientnet_lite0")
    net.add_domain("t", 4)
    torch.manual_seed(1)
    with torch.no_grad():  # t's own filters differ from the source's, so the mix matters
        for k, v in net.domain_tensors("t").items():
            if "conv_dw" in k:
                v.add_(0.3 * torch.randn_like(v))
        net.domain_tensors("t")["head.weight"].normal_(0, 0.5)
    gate = net.add_gate("t", placement="late", mixed_domains=["src", "t"])
    assert len(gate.mlps) == 5  # 16 depthwise layers in thirds: 5 / 6 / 5
    assert [len(net.add_gate("t", p, ["src", "t"]).mlps) for p in ("early", "middle", "all")] == [5, 6, 16]
    net.add_gate("t", "late", ["src", "t"])
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("gates.")}
    params = net.set_trainable_gate("t")
    net.eval()  # gates train on frozen statistics
    opt = torch.optim.SGD(params, lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(net(x, "t", use_gate=True), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_method_refusals_name_the_trunk():
    with pytest.raises(ValueError, match="does not apply to trunk 'timm/resnet10t': it has no depthwise conv"):
        create_network("timm/resnet10t", method="dw")
    with pytest.raises(ValueError, match="unknown timm model 'efficientnet_nope'"):
        create_network("timm/efficientnet_nope")
    with pytest.raises(ValueError, match="width 0.5 is not available for timm trunks"):
        create_network("timm/tf_efficientnet_lite0", width=0.5)
