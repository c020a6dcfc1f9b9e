"""`mdl data ...`: inspect a dataset source, list and export the builtin domains.

Nothing here touches the registry; builtin domains are cached under $MDL_CACHE (default ~/.cache/mdl)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mdl.cli._output import emit_json, info, out
from mdl.cli.options import Json, OnBadImage, Threads, TrainImages, ValImages, apply_threads

app = typer.Typer(no_args_is_help=True)

Src = Annotated[str, typer.Argument(help="A decathlon root (annotations/*.json), an MNIST-format (IDX) folder, "
                                         "an ImageFolder tree, or builtin:NAME.")]
Domain = Annotated[Optional[str], typer.Option("--domain", help="Domain NAME inside a decathlon root.")]
ImageSize = Annotated[int, typer.Option("--image-size", help="Shorter side after resizing (benchmark: 72).")]
BadImage = Annotated[OnBadImage, typer.Option("--on-bad-image", help="Undecodable image: fail (default) or skip and count.")]


@app.command()
def inspect(src: Src, domain: Domain = None, image_size: ImageSize = 72, on_bad_image: BadImage = OnBadImage.fail,
            seed: Annotated[int, typer.Option(help="Seed of the train/val split (ImageFolder tree, IDX folder) and subsets.")] = 0,
            train_images: TrainImages = None, val_images: ValImages = None,
            threads: Threads = None, json: Json = False) -> None:
    """Show what the tool reads from SRC: classes, split sizes, image sizes, mean/std, problems."""
    apply_threads(threads)
    from mdl.core.data import open_source

    dd = open_source(src, domain, image_size=image_size, on_bad_image=on_bad_image.value, seed=seed, log=info,
                     train_images=train_images, val_images=val_images)
    s = dd.summary()
    if json:
        emit_json(s)
        return
    from rich.table import Table

    t = Table(title=f"{s['name']}  ({s['kind']}: {s['source']})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    classes = ", ".join(s["classes"][:12]) + (f", ... ({s['num_classes']} in all)" if s["num_classes"] > 12 else "")
    t.add_row("classes", f"{s['num_classes']}: {classes}")
    for name, sp in s["splits"].items():
        extra = (f", {sp['per_class_min']}-{sp['per_class_max']} per class" if sp["labelled"] else ", unlabelled")
        t.add_row(name, f"{sp['images']} images{extra}")
    r = s["image_size_range"]
    if r:
        t.add_row("image sizes", f"smallest {r['min'][0]}x{r['min'][1]}, largest {r['max'][0]}x{r['max'][1]} (WxH, by area)")
    t.add_row("preprocessing", f"shorter side {s['image_size']}, crop {s['crop']}, "
              + ("random crop + flip in training" if s["flip"] else "no flip, no crop jitter"))
    t.add_row("mean", " ".join(f"{v:.4f}" for v in s["mean"]))
    t.add_row("std", " ".join(f"{v:.4f}" for v in s["std"]))
    if s["category_ids"]:
        t.add_row("category ids", f"{s['category_ids'][0]} .. {s['category_ids'][-1]}")
    t.add_row("fingerprint", s["fingerprint"][:16])
    out.print(t)
    if s["problems"]:
        for p in s["problems"]:
            info(f"[yellow]problem:[/] {p}")
    else:
        info("no problems found")


@app.command("builtins")
def builtins(json: Json = False) -> None:
    """List the bundled domains (generated on first use, cached under $MDL_CACHE)."""
    from mdl.core.data.builtin import cache_dir, registry

    rows = [{"name": s.name, "flip": s.flip, "prefix": s.prefix, "about": s.about, "src": f"builtin:{s.name}"}
            for s in registry().values()]
    if json:
        emit_json(rows)
        return
    from rich.table import Table

    t = Table("name", "flip", "prefix", "about")
    for r in rows:
        t.add_row(r["name"], "yes" if r["flip"] else "no", str(r["prefix"]), r["about"])
    out.print(t)
    info(f"cache: {cache_dir()}")


@app.command("export-builtin")
def export_builtin(name: Annotated[str, typer.Argument(help="Builtin domain name (see `mdl data builtins`).")],
                   out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the decathlon layout into.")],
                   json: Json = False) -> None:
    """Write a builtin domain in the Visual Decathlon layout (annotations/NAME_{train,val,test}.json + PNGs)."""
    from mdl.core.data.builtin import export_builtin as export

    if name.startswith("builtin:"):
        name = name[len("builtin:"):]
    written = export(name, out_dir, log=info)
    result = {"name": name, "out": str(out_dir), "splits": written,
              "annotations": [str(out_dir / "annotations" / f"{name}_{s}.json") for s in written]}
    if json:
        emit_json(result)
    else:
        info(f"wrote {sum(written.values())} images of {name!r} to {out_dir} "
             f"({', '.join(f'{k} {v}' for k, v in written.items())}); read it back with --data {out_dir} --domain {name}")
