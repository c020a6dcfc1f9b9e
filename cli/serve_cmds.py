"""`mdl serve` and `mdl export`: thin commands over mdl.serve and mdl.workflows.export; heavy imports inside."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdl.cli._output import emit_json, info
from mdl.cli.options import DeviceOpt, Device, Home, Json, Threads, apply_threads
from mdl.core.choices import EXPORT_FORMATS
from mdl.workflows.catalog import open_registry


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one, printed).")] = 8000,
    device: DeviceOpt = Device.auto,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most images in one stacked pass.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, help="Longest wait for a batch to fill, from its first image.")] = 5.0,
    poll_s: Annotated[float, typer.Option("--poll-s", min=0.0, help="Seconds between registry polls for new or removed versions (0: never).")] = 2.0,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest request body.")] = 8.0,
    threads: Threads = None, home: Home = None,
) -> None:
    """Serve every registered domain over HTTP from one process, mixed-domain requests batched into one pass.

    POST /v1/predict, GET /v1/domains, GET /healthz, GET /metrics; new and removed versions are picked
    up without a restart."""
    apply_threads(threads)
    from mdl.serve.server import bind, build, run

    reg = open_registry(home)
    sock = bind(host, port)  # a taken port fails before seconds of loading
    service = build(reg, device=device.value, max_batch=max_batch, max_wait_ms=max_wait_ms, poll_s=poll_s,
                    max_upload_mb=max_upload_mb)
    snap = service.pool.snapshot
    for key, reason in snap.refused.items():
        info(f"[yellow]refused[/] {key}: {reason}")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    run(service, sock, on_ready=lambda: info(
        f"Serving {len(snap.domains)} domain(s) from {reg.home} on {url} (max batch {max_batch}, "
        f"max wait {max_wait_ms:g} ms, device {service.batcher.dev.device}); Ctrl+C stops"))


def export(
    domains: Annotated[list[str], typer.Argument(help="Domains to put in the file (their current versions).")],
    fmt: Annotated[str, typer.Option("--format", help=f"{', '.join(EXPORT_FORMATS)}: onnx is checked with "
                                     "onnxruntime, pt2 is torch.export's (PyTorch's format), torchscript is deprecated.")] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="File to write.")] = ...,
    threads: Threads = None, home: Home = None, as_json: Json = False,
) -> None:
    """Write DOMAIN... as one multi-domain network file (ONNX, torch.export .pt2 or TorchScript), checked
    against PyTorch.

    Inputs: images and a per-sample domain index; preprocessing and class names are in its metadata."""
    apply_threads(threads)
    from mdl.workflows.export import export as run

    report = run(open_registry(home), domains, fmt, out)
    if as_json:
        emit_json(report)
    else:
        worst = max(c["max_abs_diff"] for c in report["checks"])
        names = ", ".join(f"{d['name']} v{d['version']}" for d in report["domains"])
        info(f"Wrote {report['file']} ({report['format']}, {report['bytes'] / 1e6:.1f} MB): {names}; "
             f"checked with {report['checked_against']}: max |diff| {worst:.2g} (tolerance {report['tolerance']:g})")


# command name -> function, in the order `mdl --help` lists them
COMMANDS = {"serve": serve, "export": export}
