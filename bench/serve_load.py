"""Load on `mdl serve`: a mix of 10 domains vs a single domain, at several client concurrency levels.

    PYTHONPATH=. python bench/serve_load.py                 # ~1 min; bench/results/serve_load.{json,md}
    PYTHONPATH=. python bench/serve_load.py --quick         # smoke test (~20 s), writes under /tmp

A throw-away registry (in a temp folder) gets one trunk and 10 `dw` domains with the Visual Decathlon's
class counts (random-initialised: speed does not depend on the weights), each preprocessed as
`mdl add-domain` records by default (resize 72, crop 64). The real `mdl serve` runs as a subprocess on a
free port of 127.0.0.1 (local only) with the given --max-batch / --max-wait-ms / --device; the client
(asyncio + httpx, in this process) keeps C requests of one PNG image each in flight (a closed loop) for
--seconds per configuration after a warm-up, and records per-request latency. `mixed`: request i goes
to domain i mod 10; `single`: every request to one domain. Throughput = images answered / seconds;
latency percentiles over every request of the configuration; the server's mean batch size from the
difference of its /metrics before and after. The client shares the machine's cores with the server.
Each configuration runs --rounds times, mixed and single alternating (so drifting load hits both alike);
the table gives the round with the median throughput of each.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, write_json  # noqa: E402

DOMAINS = {"aircraft": 100, "cifar100": 100, "daimlerpedcls": 2, "dtd": 47, "gtsrb": 43, "omniglot": 1623,
           "svhn": 10, "ucf101": 101, "vgg-flowers": 102, "digits": 10}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="timm/tf_efficientnet_lite0")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--image-size", type=int, default=72)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per configuration")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating mixed/single rounds per client count")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="server torch threads (default: mdl's policy)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.arch, args.width, args.image_size, args.crop = "resnet26_dw", 0.25, 36, 32
        args.concurrency, args.seconds, args.warmup, args.rounds = [1, 8], 2.0, 0.5, 1
        args.out = Path(tempfile.gettempdir()) / "mdl-bench-serve"
    return args


def make_registry(home: Path, arch: str, width: float, image_size: int, crop: int):
    import torch

    from mdl.core import create_network
    from mdl.registry.store import Registry

    torch.manual_seed(0)
    reg, _ = Registry.init(home)
    net = create_network(arch, "dw", {"src": 10}, width=width)
    tensors = net.trunk_state_dict("src")
    trunk = reg.add_trunk(arch=arch, width=width, source="bench", num_params=sum(t.numel() for t in tensors.values()),
                          config={"image_size": image_size}, tensors=tensors)
    data = {"source": "bench", "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25], "image_size": image_size,
            "crop": crop}
    for name, k in DOMAINS.items():
        net.add_domain(name, k)
        reg.add_domain_version(name=name, method="dw", num_classes=k, domain_params=0, accuracy=None,
                               trunk_id=trunk.id, classes=[str(i) for i in range(k)], data=data, config={},
                               tensors=net.domain_state_dict(name))
    return reg


def images(n: int, size: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def start_server(home: Path, args, log: Path):
    env = {**os.environ, "MDL_RUNTIME_DIR": str(home.parent / "jobs")}
    cmd = [sys.executable, "-m", "mdl", "serve", "--home", str(home), "--port", "0", "--device", args.device,
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--poll-s", "0"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    fh = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()}")


def server_batches(text: str) -> tuple[float, float]:
    get = lambda name: float(re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M).group(1))  # noqa: E731
    return get("mdl_batch_size_sum"), get("mdl_batch_size_count")


async def run_config(url: str, domains: list[str], payloads: list[str], concurrency: int, seconds: float,
                     warmup: float) -> dict:
    import httpx

    latencies, answered, errors = [], 0, 0
    counter = 0
    measuring = False

    async def worker(client):
        nonlocal counter, answered, errors
        while not stop.is_set():
            i = counter
            counter += 1
            body = {"items": [{"domain": domains[i % len(domains)], "image": payloads[i % len(payloads)]}], "top_k": 1}
            t = time.perf_counter()
            r = await client.post("/v1/predict", json=body)
            dt = time.perf_counter() - t
            if measuring and not stop.is_set():
                if r.status_code == 200:
                    latencies.append(dt)
                    answered += 1
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        before = server_batches((await client.get("/metrics")).text)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring, t0 = True, time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        after = server_batches((await client.get("/metrics")).text)
    lat = sorted(latencies)
    pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None  # noqa: E731
    batches = after[1] - before[1]
    return {"concurrency": concurrency, "domains": len(set(domains)), "requests": answered, "errors": errors,
            "seconds": round(elapsed, 2), "images_per_s": round(answered / elapsed, 2),
            "p50_ms": round(pct(0.5), 1) if lat else None, "p99_ms": round(pct(0.99), 1) if lat else None,
            "mean_server_batch": round((after[0] - before[0]) / batches, 2) if batches else None}


def table(results: dict) -> str:
    lines = [f"# `mdl serve` load: 10 mixed domains vs 1 domain ({results['config']['arch']}, "
             f"{results['config']['crop']} px, device {results['config']['device']})", "",
             "| clients | mixed img/s | single img/s | mixed / single | mixed p50 / p99 ms | single p50 / p99 ms "
             "| mean batch mixed / single |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        m, s = row["mixed"], row["single"]
        lines.append(f"| {row['concurrency']} | {m['images_per_s']} | {s['images_per_s']} | {row['ratio']} | "
                     f"{m['p50_ms']} / {m['p99_ms']} | {s['p50_ms']} / {s['p99_ms']} | "
                     f"{m['mean_server_batch']} / {s['mean_server_batch']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mdl-serve-bench-") as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        make_registry(home, args.arch, args.width, args.image_size, args.crop)
        proc, url = start_server(home, args, Path(tmp) / "server.log")
        print(f"registry + server ready in {time.perf_counter() - t0:.1f}s at {url}", file=sys.stderr)
        payloads = images(16, args.image_size)
        rows = []
        try:
            for c in args.concurrency:
                row, runs = {"concurrency": c}, {"mixed": [], "single": []}
                for _ in range(args.rounds):
                    for kind, domains in (("mixed", list(DOMAINS)), ("single", [next(iter(DOMAINS))])):
                        runs[kind].append(asyncio.run(run_config(url, domains, payloads, c, args.seconds, args.warmup)))
                        print(kind, runs[kind][-1], file=sys.stderr)
                for kind, rs in runs.items():
                    row[kind] = sorted(rs, key=lambda r: r["images_per_s"])[len(rs) // 2]
                    row[f"{kind}_rounds_images_per_s"] = [r["images_per_s"] for r in rs]
                row["ratio"] = round(row["mixed"]["images_per_s"] / row["single"]["images_per_s"], 3)
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results = {"machine": machine(), "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "rows": rows}
    write_json(args.out / "serve_load.json", results)
    (args.out / "serve_load.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
