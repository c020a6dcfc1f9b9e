"""`mdl export`: the current versions of some domains as one ONNX, torch.export (.pt2) or TorchScript file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdl.registry.store import Registry
from mdl.workflows.common import NetworkLoader, check_output_file
from mdl.workflows.events import note


def export(reg: Registry, names: list[str], fmt: str, out: Path) -> dict[str, Any]:
    from mdl.core.choices import DEPRECATED_FORMATS, EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unsupported --format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    if fmt in DEPRECATED_FORMATS:
        note(DEPRECATED_FORMATS[fmt], "note")
    from mdl.core.export import INPUTS, OUTPUT, export_network

    if len(set(names)) != len(names):
        raise ValueError(f"a domain is named twice: {' '.join(names)}")
    out = check_output_file(out, "--out")
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
