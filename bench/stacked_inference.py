"""Stacked mixed-batch inference (paper eq. 7) vs looping over domains, resnet26_dw / dw, CPU.

Usage: OMP_NUM_THREADS=T PYTHONPATH=. python bench/stacked_inference.py [--threads T] [--width W]
       [--px 64] [--domains 10] [--per-domain 1 4 10] [--repeats N] [--channels-last]
For each batch (``per-domain`` images of each of ``domains`` domains, interleaved) it times:
  stacked  one net(x, domain=[...]) call: gathered grouped depthwise conv, shared pointwise once;
  loop     for each domain: net(x[its samples], domain=d)  (what you do without stacking);
  single   the same batch size, all one domain (the floor: no per-sample gathering at all).
Median of ``repeats`` interleaved timed rounds after 2 warm-ups, torch.inference_mode, eval mode.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mdl_core import create_network


def timeit(fns, repeats):
    """Median seconds per call of each fn; the fns are interleaved round by round so that load
    from other processes on a shared machine hits all of them alike."""
    for fn in fns:
        for _ in range(2):
            fn()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            ts[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in ts]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--per-domain", type=int, nargs="+", default=[1, 4, 10])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--channels-last", action="store_true", help="feed channels_last input (all paths)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    names = [f"d{i}" for i in range(a.domains)]
    net = create_network("resnet26_dw", method="dw", domains={n: 10 + 5 * i for i, n in enumerate(names)},
                         width=a.width).eval()
    with torch.no_grad():
        for st in net.domain_store.values():
            for k, t in st.flat().items():
                if not k.endswith("running_var"):
                    t.add_(0.01 * torch.randn_like(t))
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={a.threads}, "
          f"{'channels_last' if a.channels_last else 'NCHW'}, "
          f"width={a.width}, {a.px}px, {a.domains} domains, median of {a.repeats}")
    print(f"{'batch':>6} {'per-dom':>7} {'stacked img/s':>14} {'loop img/s':>11} {'single img/s':>13} "
          f"{'stacked/loop':>13} {'max|diff|':>10}")
    with torch.inference_mode():
        for k in a.per_domain:
            doms = [names[i % a.domains] for i in range(k * a.domains)]
            b = len(doms)
            x = torch.randn(b, 3, a.px, a.px)
            if a.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            groups = {d: torch.tensor([i for i, n in enumerate(doms) if n == d]) for d in names}

            def loop():
                return [net(x.index_select(0, ix), domain=d) for d, ix in groups.items()]

            t_stacked, t_loop, t_single = timeit(
                [lambda: net(x, domain=doms), loop, lambda: net(x, domain=names[0])], a.repeats)
            out = net(x, domain=doms)
            diff = max((out[ix, : y.shape[1]] - y).abs().max().item() for (d, ix), y in zip(groups.items(), loop()))
            print(f"{b:>6} {k:>7} {b / t_stacked:>14.1f} {b / t_loop:>11.1f} {b / t_single:>13.1f} "
                  f"{t_loop / t_stacked:>12.2f}x {diff:>10.2e}")


if __name__ == "__main__":
    main()
