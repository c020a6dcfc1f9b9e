"""A registry with a tiny trunk and a few domains, made in a second (no training): random but distinct
per-domain tensors, each domain with its own preprocessing statistics and class names."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ARCH, WIDTH, CROP, SIZE = "resnet26_dw", 0.25, 16, 18


def perturb(net, name: str, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in net.domain_tensors(name).items():
            noise = torch.rand(t.shape, generator=g) if k.endswith("running_var") else torch.randn(t.shape, generator=g)
            t.mul_(1 + 0.3 * noise) if k.endswith("running_var") else t.add_(0.1 * noise)


def make_registry(home: Path, domains: dict[str, int]):
    """Registry at `home` with trunk resnet26_dw (width 0.25) and one dw version of each domain."""
    import torch

    from mdl.core import create_network
    from mdl.registry.store import Registry

    torch.manual_seed(0)
    reg, _ = Registry.init(home)
    net = create_network(ARCH, "dw", {"src": 4}, width=WIDTH)
    perturb(net, "src", 1)
    tensors = net.trunk_state_dict("src")
    num_params = sum(t.numel() for k, t in tensors.items() if not k.endswith(("running_mean", "running_var")))
    trunk = reg.add_trunk(arch=ARCH, width=WIDTH, source="src", num_params=num_params,
                          config={"image_size": SIZE}, tensors=tensors)
    for i, (name, k) in enumerate(domains.items()):
        register_domain(reg, trunk.id, name, k, seed=10 + i)
    return reg


def register_domain(reg, trunk_id: int, name: str, k: int, seed: int):
    from mdl.workflows.common import NetworkLoader

    trunk = next(t for t in reg.trunks() if t.id == trunk_id)
    net = NetworkLoader(reg).network(trunk, "dw")
    net.add_domain(name, k)
    perturb(net, name, seed)
    rng = np.random.default_rng(seed)
    data = {"source": "test", "mean": [float(m) for m in rng.uniform(0.3, 0.6, 3)],
            "std": [float(s) for s in rng.uniform(0.2, 0.3, 3)], "image_size": SIZE, "crop": CROP}
    return reg.add_domain_version(
        name=name, method="dw", num_classes=k, domain_params=net.parameter_counts()["domains"][name], accuracy=None,
        trunk_id=trunk_id, classes=[f"{name}-class{j}" for j in range(k)], data=data, config={},
        tensors=net.domain_state_dict(name))


def png_bytes(seed: int, size=(23, 19)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def start_server(home: Path, base: Path, max_wait_ms: float):
    """The real `mdl serve` on a free loopback port (tiny network, 1 thread, polling every 0.2 s, a
    50 KB upload limit): (process, url, log path, env). Raises RuntimeError if it does not come up."""
    import os
    import re
    import subprocess
    import sys
    import time

    env = {**os.environ, "MDL_DEBUG": "0", "MDL_CACHE": str(base / "cache"), "MDL_RUNTIME_DIR": str(base / "jobs")}
    log = base / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mdl", "serve", "--home", str(home), "--port", "0", "--device", "cpu",
             "--poll-s", "0.2", "--max-wait-ms", str(max_wait_ms), "--max-batch", "16", "--max-upload-mb", "0.05",
             "--threads", "1"], stdout=fh, stderr=subprocess.STDOUT, env=env)
    url, deadline = None, time.monotonic() + 120
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        url = m.group(1) if m else time.sleep(0.1)
    if url is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {log.read_text()}")
    return proc, url, log, env


def stop_server(proc) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
