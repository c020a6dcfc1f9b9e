"""`mdl trunk ...`: pretrained trunks made elsewhere (ImageNet weights from a package, a file, timm)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from mdl.cli._output import emit_json, info
from mdl.cli.options import Home, Json, Threads, TrunkArch, apply_threads
from mdl.core.choices import DEFAULT_TRUNK
from mdl.workflows.catalog import open_registry, trunk_row, version_row

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(
    weights: Annotated[Optional[str], typer.Argument(help="Weights file (.safetensors, or a PyTorch state dict read "
                                                          "weights-only). Default: the packaged Lite0 ImageNet weights.")] = None,
    arch: TrunkArch = DEFAULT_TRUNK,
    from_timm: Annotated[bool, typer.Option("--from-timm", help="Download timm's own pretrained weights (needs the network).")] = False,
    source_name: Annotated[str, typer.Option("--source-name", help="Domain name for the weights' own classifier.")] = "imagenet",
    image_size: Annotated[int, typer.Option("--image-size", min=8, help="Shorter side new domains are resized to (crop 64/72 of it).")] = 72,
    reference: Annotated[Optional[str], typer.Option(
        "--reference", help="WEIGHTS is a state dict of a paper's reference code: guo2019 (resnet26_dw) or "
                            "rebuffi2018 (resnet26; parallel/series adapters or bn, detected).")] = None,
    names: Annotated[Optional[str], typer.Option(
        "--names", help="With --reference: comma-separated domain names for the checkpoint's tasks, in task order "
                        "(task 0 becomes the trunk's source domain). Default for one task: imagenet.")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="R,G,B mean the imported domains' images are "
                    "normalised with. Default: the weights' pretrained config, else ImageNet's (0.485,0.456,0.406).")] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="R,G,B std (default: as --mean; ImageNet's "
                                                             "0.229,0.224,0.225).")] = None,
    crop: Annotated[Optional[int], typer.Option("--crop", min=8, help="Crop the imported domains take "
                                                "(default: 64/72 of --image-size; the weights' config for their classifier).")] = None,
    threads: Threads = None, home: Home = None, as_json: Json = False,
) -> None:
    """Register a pretrained trunk version (with its provenance and preprocessing config)."""
    apply_threads(threads)
    from mdl.workflows.trunks import import_reference, import_trunk
    from mdl.core.data.transforms import parse_stats

    stats = {"mean": parse_stats(mean, "mean") if mean else None, "std": parse_stats(std, "std") if std else None,
             "crop": crop}
    reg = open_registry(home)
    if reference is not None:
        if weights is None:
            raise ValueError("--reference needs the checkpoint file as WEIGHTS")
        trunk, versions = import_reference(reg, weights, layout=reference, image_size=image_size,
                                           names=[n.strip() for n in names.split(",")] if names else None, **stats)
        result = trunk_row(trunk, domains=[version_row(v) for v in versions])
        if as_json:
            emit_json(result)
        else:
            info(f"Registered trunk {trunk.label} and {', '.join(f'{v.name} v{v.version}' for v in versions)}")
        return
    if names is not None:
        raise ValueError("--names only applies with --reference")
    trunk, version = import_trunk(reg, arch=arch, path=weights, from_timm=from_timm, source_name=source_name,
                                  image_size=image_size, **stats)
    result = trunk_row(trunk, domain=version_row(version) if version else None)
    if as_json:
        emit_json(result)
    else:
        info(f"Registered trunk {trunk.label}")
