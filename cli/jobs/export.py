"""`mdl export`: the current versions of some domains as one ONNX or TorchScript file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdl.cli.jobs.common import NetworkLoader
from mdl.registry.artifacts import probe_writable
from mdl.registry.store import Registry


def _check_out(out: Path) -> Path:
    out = Path(out).expanduser()
    folder = out.resolve().parent
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name")
    if not folder.is_dir():
        raise ValueError(f"--out {out}: folder {folder} does not exist")
    try:
        probe_writable(folder)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write in {folder} ({exc.strerror})") from None
    return out


def export(reg: Registry, names: list[str], fmt: str, out: Path) -> dict[str, Any]:
    from mdl.core.export import FORMATS, INPUTS, OUTPUT, export_network

    if fmt not in FORMATS:
        raise ValueError(f"unsupported --format {fmt!r}: choose {', '.join(FORMATS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a domain is named twice: {' '.join(names)}")
    out = _check_out(out)
    versions = [reg.domain_version(n) for n in names]  # unknown or removed: a one-line NotFound
    first = versions[0]
    for v in versions[1:]:
        if (v.trunk.id, v.method) != (first.trunk.id, first.method):
            raise ValueError(f"{v.name} ({v.method} on {v.trunk.label}) and {first.name} ({first.method} on "
                             f"{first.trunk.label}) do not share one network; export them separately")
        if v.data["crop"] != first.data["crop"]:
            raise ValueError(f"{v.name} takes {v.data['crop']} px inputs and {first.name} {first.data['crop']} px: "
                             "one stacked input needs one size")
    net = NetworkLoader(reg).network(first.trunk, first.method, versions)
    meta = {
        "format": "mdl multi-domain network", "inputs": {
            INPUTS[0]: "float32 [B, 3, crop, crop]: each image resized (shorter side image_size, antialiased), "
                       "centre-cropped, scaled to [0, 1], normalised with ITS domain's mean/std",
            INPUTS[1]: "int64 [B]: each image's position in 'domains'"},
        "output": {OUTPUT: "float32 [B, max num_classes]: -inf beyond each image's own num_classes; "
                           "softmax over its own classes gives what `mdl predict` reports"},
        "trunk": first.trunk.label, "method": first.method,
        "domains": [{"name": v.name, "version": v.version, "num_classes": v.num_classes,
                     "classes": [str(c) for c in v.classes], "mean": list(v.data["mean"]), "std": list(v.data["std"]),
                     "image_size": int(v.data["image_size"]), "crop": int(v.data["crop"]),
                     "sha256": v.artifact.sha256} for v in versions],
    }
    report = export_network(net, fmt, out, meta, image_size=int(first.data["crop"]))
    return report | {"domains": [{"name": v.name, "version": v.version, "index": i} for i, v in enumerate(versions)]}
