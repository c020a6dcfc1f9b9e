"""State dicts: safetensors round trip, strictness, error messages."""
import pytest
import torch
from safetensors.torch import load, save

from mdl.core import create_network


@pytest.mark.parametrize("arch,method", [("resnet26_dw", "dw"), ("resnet26", "series-adapter"),
                                         ("resnet26", "parallel-adapter")])
def test_domain_roundtrip_through_safetensors_bytes(arch, method):
    torch.manual_seed(0)
    net = create_network(arch, method=method, domains={"a": 5, "b": 3}, width=0.125)
    with torch.no_grad():
        for t in net.domain_tensors("a").values():
            t.add_(torch.randn_like(t).abs() * 0.1)
    sd = net.domain_state_dict("a")
    assert any(k.endswith("running_var") for k in sd) and "head.weight" in sd
    blob = save(sd)
    other = create_network(arch, method=method, domains={"b": 3}, width=0.125)
    other.load_domain_state_dict("a", load(blob))  # creates the domain from head.bias
    assert other.domains == {"b": 3, "a": 5}
    back = other.domain_state_dict("a")
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    other.load_shared_state_dict(load(save(net.shared_state_dict())))
    net.eval(), other.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x, "a"), other(x, "a"))


def test_load_domain_is_strict():
    net = create_network("resnet26_dw", method="dw", domains={"a": 5}, width=0.125)
    sd = net.domain_state_dict("a")
    bad = dict(sd)
    bad.pop("head.bias")
    with pytest.raises(ValueError, match="missing keys"):
        net.load_domain_state_dict("a", bad)
    with pytest.raises(ValueError, match="unexpected keys"):
        net.load_domain_state_dict("a", {**sd, "s9.x": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape mismatch"):
        net.load_domain_state_dict("a", {**sd, "head.bias": torch.zeros(7)})


def test_trunk_state_dict_is_method_independent():
    torch.manual_seed(0)
    ft = create_network("resnet26", method="finetune", domains={"src": 4}, width=0.125)
    trunk = ft.trunk_state_dict("src")
    for method in ("bn", "parallel-adapter", "series-adapter", "classifier-only", "finetune"):
        net = create_network("resnet26", method=method, domains={}, width=0.125)
        net.load_trunk_state_dict(trunk)
        net.add_domain("d", 3)
        got = net.trunk_state_dict("d")
        assert got.keys() == trunk.keys() and all(torch.equal(got[k], trunk[k]) for k in trunk)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown arch 'resnet50'; valid: resnet26, resnet26_dw"):
        create_network("resnet50")
    with pytest.raises(ValueError, match="unknown method 'lora'; valid:"):
        create_network("resnet26", method="lora")
    with pytest.raises(ValueError, match="does not apply to trunk 'resnet26': it has no depthwise convolutions"):
        create_network("resnet26", method="dw")
    with pytest.raises(ValueError, match="does not apply to trunk 'resnet26': it has no depthwise convolutions to share"):
        create_network("resnet26", method="dw-sharing")
    net = create_network("resnet26_dw", method="dw", domains={"a": 2}, width=0.125)
    with pytest.raises(KeyError, match="unknown domain 'zz'; registered domains: a"):
        net(torch.randn(1, 3, 16, 16), domain="zz")
    with pytest.raises(KeyError, match="unknown domain 'zz'"):
        net(torch.randn(2, 3, 16, 16), domain=["a", "zz"])
    with pytest.raises(ValueError, match="invalid domain name"):
        net.add_domain("a.b", 3)
    with pytest.raises(ValueError, match="2 domain names for a batch of 1"):
        net(torch.randn(1, 3, 16, 16), domain=["a", "a"])
    with pytest.raises(ValueError, match="only 'parallel-adapter'"):
        net.fuse_adapters("a")
