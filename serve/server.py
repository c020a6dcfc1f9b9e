"""Wiring for `mdl serve`: registry -> model pool -> batcher -> FastAPI app -> uvicorn."""
from __future__ import annotations

import socket
from dataclasses import dataclass

from mdl.registry.store import Registry


@dataclass
class Service:
    app: object
    pool: object
    batcher: object
    metrics: object


def build(reg: Registry, *, device: str = "auto", max_batch: int = 32, max_wait_ms: float = 5.0,
          poll_s: float = 2.0, max_upload_mb: float = 8.0) -> Service:
    """Load every current version (hash-checked) and assemble the app; nothing runs until it is served."""
    from mdl.core.training import DeviceSetup
    from mdl.serve.app import create_app
    from mdl.serve.batcher import Batcher
    from mdl.serve.metrics import Metrics
    from mdl.serve.pool import ModelPool

    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {max_upload_mb:g}")
    if poll_s < 0:
        raise ValueError(f"--poll-s must be >= 0 (0: never re-read the registry), got {poll_s:g}")
    dev = DeviceSetup.resolve(device)
    pool = ModelPool(reg, dev, poll_s=poll_s)
    pool.refresh()
    batcher = None

    def state():
        snap = pool.snapshot
        return {"mdl_served_domains": ("Domains being served.", len(snap.domains)),
                "mdl_refused_versions": ("Current versions refused (artifact failed its check).", len(snap.refused)),
                "mdl_registry_generation": ("Reloads of the served networks.", snap.generation),
                "mdl_queue_depth": ("Items waiting for a batch.", batcher.queue.qsize() if batcher else 0)}

    metrics = Metrics(state=state)
    batcher = Batcher(pool, dev, metrics, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0)
    app = create_app(pool, batcher, metrics, max_upload_bytes=int(max_upload_mb * (1 << 20)))
    return Service(app, pool, batcher, metrics)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error (and --port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets that say so, and
    # without it every response on a kept-alive connection waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(service: Service, sock: socket.socket, on_ready=None) -> None:
    import uvicorn

    config = uvicorn.Config(service.app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    if on_ready is not None:
        orig = server.startup

        async def startup(sockets=None):
            await orig(sockets=sockets)
            if server.started:
                on_ready()

        server.startup = startup
    server.run(sockets=[sock])
