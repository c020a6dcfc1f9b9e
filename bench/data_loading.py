"""Loading throughput (images/s into ready batches) vs. a training step of similar cost, on CPU.

    PYTHONPATH=. python bench/data_loading.py [--domain source] [--image-size 32] [--batch 128]

Writes bench/results/data_loading.json. The training comparison is a plain depthwise-separable conv
net about the cost of resnet26_dw at width 0.25 (stem 16, stages 32/64/128, 4 blocks each), forward +
backward + SGD step, so the data layer can be judged against what it feeds."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mdl.core.data import make_loader, open_source  # noqa: E402


def loader_rate(dd, batch, workers, min_images=8000):
    ld = make_loader(dd, "train", batch, train=True, workers=workers, seed=0, drop_last=True)
    it = iter(ld)
    next(it)  # start workers
    n, t0 = 0, time.perf_counter()
    while n < min_images:
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(ld)
            continue
        n += x.shape[0]
    dt = time.perf_counter() - t0
    del it, ld
    return n / dt


def block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def tiny_dw_net(classes):
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    cin = 16
    for cout in (32, 64, 128):
        for i in range(4):
            layers += [block(cin, cout, 2 if i == 0 else 1)]
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def train_rate(classes, crop, batch, steps=15):
    net = tiny_dw_net(classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, classes, (batch,))
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", default="source")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_loading.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    t0 = time.perf_counter()
    dd = open_source(f"builtin:{a.domain}", image_size=a.image_size, log=lambda m: print(m, file=sys.stderr))
    open_s = time.perf_counter() - t0
    open_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    res = {
        "domain": a.domain, "image_size": a.image_size, "crop": dd.crop, "batch": a.batch,
        "train_images": len(dd.splits["train"]), "classes": dd.num_classes,
        "open_source_s": round(open_s, 2), "open_source_cpu_s": round(open_cpu, 2),
        "loader_img_per_s": {f"workers={w}": round(loader_rate(dd, a.batch, w)) for w in (0, 2)},
        "train_step_img_per_s": round(train_rate(dd.num_classes, dd.crop, a.batch)),
        "torch_threads": a.threads, "cpus": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
        "note": "shared 2-core machine, other jobs running: rates are indicative",
    }
    print(json.dumps(res, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
