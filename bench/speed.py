"""Speed and memory of the `dw` design, as ratios measured in one run on one machine.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/speed.py --threads 1   # full run (~7 min); bench/results/speed.{json,md,png}
    PYTHONPATH=. python bench/speed.py --quick    # smoke test (seconds), writes to /tmp

Training (resnet26_dw, random inputs, SGD momentum + weight decay, one step = forward, cross-entropy,
backward, optimiser step): `dw` add-domain (only the domain's tensors trainable, via
`net.train_domain(domain)`: frozen pointwise convs need no weight gradients) vs `finetune` of the same
network (every tensor trainable). NCHW and channels_last (what `DeviceSetup` uses on CPU and GPU).

Inference (eval mode, `torch.inference_mode`, method dw): one batch mixing all 7 bundled target domains
(k images each, interleaved) through
  stacked   ONE `net(x, domain=[...])` call (paper eq. 7: gathered depthwise filters, shared pointwise once);
  loop      one `net(x[idx_d], domain=d)` call per domain on the same multi-domain network;
  separate  7 separate single-domain networks (each with its own copy of the shared weights), one call each;
  single    the same batch size, all one domain (the floor of any batching scheme).
All paths must give the same logits (max |diff| reported).

Timing: one process, 2 warm-up calls, median of `--repeats` timed rounds, the variants interleaved
round by round so that background load hits all of them alike. Peak memory (CPU): a FRESH subprocess
per configuration builds the same model(s) and inputs, resets the kernel's peak-RSS mark
(`/proc/self/clear_refs`), runs 3 calls and reads the peak resident set size (VmHWM); reported are
that peak and its growth over the resident size after set-up (the calls' own activations, gradients,
optimiser state, workspace). Falls back to `ru_maxrss` where /proc is missing. On CUDA: `torch.cuda.max_memory_allocated`.
On a GPU (when there is one) the training and inference figures are repeated with bf16 autocast +
channels_last, and the fraction of the GPU's bf16 dense peak FLOP/s reached is given (FLOPs counted
with `torch.utils.flop_counter.FlopCounterMode`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, median_time, write_json  # noqa: E402

# Target domains of the bundled mini-decathlon and their class counts (fixed here so that the speed
# benchmark needs no generated data).
DOMAINS = {"digits": 10, "glyphs": 126, "textures": 30, "signs": 43, "housenums": 10, "photos": 16, "pedestrians": 2}
# bf16 dense tensor-core peak, FLOP/s (vendor data sheets), for the fraction-of-peak figure on CUDA.
GPU_PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100": 756e12,
                 "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 2 repeats, output under /tmp")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory subprocesses")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU peak (bf16 dense) if not in the table")
    ap.add_argument("--report-only", action="store_true", help="rebuild speed.md and speed.png from speed.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.out = 2, Path(os.environ.get("TMPDIR", "/tmp")) / "mdl-bench-speed-quick"
    return a


def train_configs(quick: bool) -> list[dict]:
    if quick:
        return [{"width": 0.25, "px": 28, "batch": 16}]
    return [{"width": 0.25, "px": 28, "batch": 128},  # the demo's setting (32 px resized, 28 crop)
            {"width": 1.0, "px": 64, "batch": 16}]    # the paper's network at 64 px


def infer_configs(quick: bool) -> list[dict]:
    if quick:
        return [{"width": 0.25, "px": 28, "per_domain": 1}]
    return [{"width": w, "px": px, "per_domain": k} for w in (0.25, 1.0) for px in (28, 64) for k in (1, 8)]


# --------------------------------------------------------------------------------------------- models
def _perturb(net, seed: int = 0):
    """Make every domain's tensors differ (so a wrong gather would show in max|diff|)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                if t.is_floating_point():
                    noise = 0.05 * torch.randn(t.shape, generator=g).to(t)
                    t.add_(noise.abs() if k.endswith("running_var") else noise)


def train_setup(width: float, px: int, batch: int, method: str, layout: str, device: str = "cpu", amp: bool = False):
    """A resnet26_dw network, its optimiser over the trainable tensors, and one-step closure."""
    import torch
    import torch.nn.functional as F

    from mdl.core import create_network

    torch.manual_seed(0)
    d = "signs"
    net = create_network("resnet26_dw", method=method, domains={d: DOMAINS[d]}, width=width).to(device)
    if layout == "channels_last":
        net.to(memory_format=torch.channels_last)
    params = net.train_domain(d)  # dw: the domain's own tensors only; finetune: that is every tensor
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, px, px, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, DOMAINS[d], (batch,), device=device)

    def step():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x, domain=d).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    n_train = sum(p.numel() for p in params)
    return net, step, n_train


def infer_setup(width: float, px: int, per_domain: int, layout: str, device: str = "cpu", dtype=None):
    """The multi-domain network, 7 separate single-domain networks with the same tensors, a mixed batch."""
    import torch

    from mdl.core import create_network

    torch.manual_seed(0)
    names = list(DOMAINS)
    net = create_network("resnet26_dw", method="dw", domains=DOMAINS, width=width)
    _perturb(net)
    trunk = net.trunk_state_dict(names[0])
    separate = {}
    for d in names:
        s = create_network("resnet26_dw", method="dw", domains={}, width=width)
        s.load_trunk_state_dict(trunk)
        s.load_domain_state_dict(d, net.domain_state_dict(d))
        separate[d] = s
    doms = [names[i % len(names)] for i in range(per_domain * len(names))]
    x = torch.randn(len(doms), 3, px, px)
    prep = []
    for m in [net, *separate.values()]:
        m.eval().to(device)
        if dtype is not None:
            m.to(dtype)
        if layout == "channels_last":
            m.to(memory_format=torch.channels_last)
        prep.append(m)
    x = x.to(device)
    if dtype is not None:
        x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    groups = {d: torch.tensor([i for i, n in enumerate(doms) if n == d], device=device) for d in names}
    fns = {
        "stacked": lambda: net(x, domain=doms),
        "loop": lambda: [net(x.index_select(0, ix), domain=d) for d, ix in groups.items()],
        "separate": lambda: [separate[d](x.index_select(0, ix), domain=d) for d, ix in groups.items()],
        "single": lambda: net(x, domain=names[0]),
    }
    return net, separate, x, doms, groups, fns


# --------------------------------------------------------------------------------------------- child (memory)
def _vm(field: str) -> float | None:
    """A /proc/self/status field in MiB (Linux), or None."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child(spec: dict) -> dict:
    """Run one configuration in this fresh process. After set-up (imports, model(s), inputs) the
    kernel's peak-RSS mark is reset (`/proc/self/clear_refs` <- 5, Linux >= 4.0); then 3 calls run and
    the new peak (VmHWM) is read: `peak` is the process's peak resident memory during the calls,
    `growth` = peak - resident memory after set-up (the calls' own activations, gradients, workspace)."""
    import gc

    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["kind"] == "train":
        _, step, _ = train_setup(spec["width"], spec["px"], spec["batch"], spec["method"], spec["layout"])
        fn = step
    else:
        *_, fns = infer_setup(spec["width"], spec["px"], spec["per_domain"], spec["layout"])
        fn = fns[spec["mode"]]
    gc.collect()
    setup = _vm("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (not reset: includes set-up)"
    with torch.inference_mode(spec["kind"] != "train"):
        for _ in range(3):
            fn()
    peak = _vm("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setup_rss_mib": round(setup or 0, 1), "peak_rss_mib": round(peak, 1),
            "growth_mib": round(peak - (setup or 0), 1), "method": method}


def measure_memory(spec: dict, threads) -> dict:
    env = dict(os.environ)
    spec = dict(spec, threads=threads)
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed for {spec}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- benches
def count_flops(fn) -> int:
    """FLOPs of a FORWARD-only call (torch's counter; its grouped-convolution backward formula ignores
    `groups` and overcounts depthwise backward ~C-fold in torch 2.14, so backward FLOPs are derived below)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def train_flops(width: float, px: int, batch: int, method: str) -> float:
    """Training-step FLOPs: forward F + input gradients (~F) + weight gradients of the TRAINABLE
    convolutions only (each as many FLOPs as its forward). Counted per conv with forward hooks
    (2 * k_h * k_w * C_in / groups * C_out * H_out * W_out per image)."""
    import torch
    from torch import nn

    from mdl.core import create_network

    net = create_network("resnet26_dw", method=method, domains={"d": 10}, width=width)
    net.train_domain("d")
    fwd, wgrad = [0.0], [0.0]

    def hook(m, inp, out):
        f = 2 * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups * m.out_channels * out.shape[2] * out.shape[3]
        fwd[0] += f
        wgrad[0] += f if m.weight.requires_grad else 0

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, px, px), domain="d")
    for h in hs:
        h.remove()
    return batch * (2 * fwd[0] + wgrad[0])


def bench_train(cfgs, a, device="cpu", amp=False, layouts=("nchw", "channels_last")) -> list[dict]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for cfg in cfgs:
        for layout in layouts:
            runs = {m: train_setup(cfg["width"], cfg["px"], cfg["batch"], m, layout, device, amp)
                    for m in ("dw", "finetune")}
            t_dw, t_ft = median_time([runs["dw"][1], runs["finetune"][1]], a.repeats, sync=sync)
            flops = {m: train_flops(cfg["width"], cfg["px"], cfg["batch"], m) for m in runs}
            row = {**cfg, "layout": layout, "device": device, "bf16": amp,
                   "dw_img_per_s": cfg["batch"] / t_dw, "finetune_img_per_s": cfg["batch"] / t_ft,
                   "dw_over_finetune": t_ft / t_dw,
                   "trainable_params": {m: runs[m][2] for m in runs},
                   "gflop_per_step": {m: flops[m] / 1e9 for m in runs},
                   "achieved_gflop_per_s": {"dw": flops["dw"] / t_dw / 1e9, "finetune": flops["finetune"] / t_ft / 1e9}}
            if device == "cuda":
                peak = gpu_peak(a)
                if peak:
                    row["fraction_of_peak"] = {m: row["achieved_gflop_per_s"][m] * 1e9 / peak for m in runs}
                for m in runs:  # CUDA memory of each path, measured in-process from a reset peak
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    runs[m][1]()
                    torch.cuda.synchronize()
                    row.setdefault("cuda_peak_mib", {})[m] = torch.cuda.max_memory_allocated() / 2**20
            elif not a.no_memory and layout == "channels_last":
                row["memory"] = {m: measure_memory({"kind": "train", **cfg, "method": m, "layout": layout}, a.threads)
                                 for m in runs}
            rows.append(row)
            print(f"[train] {json.dumps(_short(row))}", file=sys.stderr, flush=True)
            del runs
    return rows


def bench_infer(cfgs, a, device="cpu", dtype=None, layouts=("channels_last",)) -> list[dict]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for cfg in cfgs:
        for layout in layouts:
            net, separate, x, doms, groups, fns = infer_setup(cfg["width"], cfg["px"], cfg["per_domain"], layout,
                                                              device, dtype)
            b = x.shape[0]
            with torch.inference_mode():
                ts = dict(zip(fns, median_time(list(fns.values()), a.repeats, sync=sync)))
                stacked = fns["stacked"]().float()
                loop = fns["loop"]()
                sep = fns["separate"]()
                diff = max(max((stacked[ix, : y.shape[1]] - y.float()).abs().max().item(),
                               (stacked[ix, : z.shape[1]] - z.float()).abs().max().item())
                           for (d, ix), y, z in zip(groups.items(), loop, sep))
                flops = count_flops(fns["stacked"])
            row = {**cfg, "batch": b, "layout": layout, "device": device,
                   "dtype": str(dtype or torch.float32).replace("torch.", ""),
                   **{f"{k}_img_per_s": b / t for k, t in ts.items()},
                   "stacked_over_loop": ts["loop"] / ts["stacked"], "stacked_over_separate": ts["separate"] / ts["stacked"],
                   "stacked_over_single": ts["single"] / ts["stacked"],
                   "max_abs_diff": diff, "max_abs_logit": stacked[torch.isfinite(stacked)].abs().max().item(),
                   "gflop_per_call": flops / 1e9,
                   "params": {"multi_domain_net": sum(t.numel() for t in net.state_dict().values()),
                              "separate_nets": sum(t.numel() for s in separate.values() for t in s.state_dict().values())}}
            if device == "cuda":
                peak = gpu_peak(a)
                if peak:
                    row["fraction_of_peak_stacked"] = flops / ts["stacked"] / peak
                for k, fn in fns.items():
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    with torch.inference_mode():
                        fn()
                    torch.cuda.synchronize()
                    row.setdefault("cuda_peak_mib", {})[k] = torch.cuda.max_memory_allocated() / 2**20
            elif not a.no_memory and (cfg["per_domain"] > 1 or a.quick):  # k=1: weights dominate, skip
                row["memory"] = {k: measure_memory({"kind": "infer", **cfg, "mode": k, "layout": layout}, a.threads)
                                 for k in ("stacked", "loop", "separate")}
            rows.append(row)
            print(f"[infer] {json.dumps(_short(row))}", file=sys.stderr, flush=True)
            del net, separate, fns
    return rows


def gpu_peak(a):
    import torch

    if a.peak_tflops:
        return a.peak_tflops * 1e12
    name = torch.cuda.get_device_name(0)
    for k, v in GPU_PEAK_BF16.items():
        if k in name:
            return v
    return None


def _short(row):
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
            if not isinstance(v, dict)}


# --------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"Machine: {m['cpu']}, {m['cpus']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
         + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU") + f"; median of {res['repeats']} interleaved rounds; "
         f"load average at start {m.get('load_average_1_5_15')}.", "",
         "Training step (resnet26_dw, SGD): `dw` add-domain vs `finetune` of the same network", "",
         "| device | width | px | batch | layout | dw img/s | finetune img/s | **dw / finetune** | trainable params dw / ft | "
         "GFLOP/step dw / ft (GFLOP/s reached) | peak RSS MiB dw / ft (growth) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["train"]:
        mem = r.get("memory")
        if mem:
            mem_s = (f"{mem['dw']['peak_rss_mib']:.0f} / {mem['finetune']['peak_rss_mib']:.0f} "
                     f"(+{mem['dw']['growth_mib']:.0f} / +{mem['finetune']['growth_mib']:.0f})")
        elif r.get("cuda_peak_mib"):
            mem_s = f"CUDA {r['cuda_peak_mib']['dw']:.0f} / {r['cuda_peak_mib']['finetune']:.0f}"
        else:
            mem_s = "–"
        dev = r["device"] + (" bf16" if r["bf16"] else "")
        frac = (f" ({100 * r['fraction_of_peak']['dw']:.1f}% / {100 * r['fraction_of_peak']['finetune']:.1f}% of peak)"
                if r.get("fraction_of_peak") else "")
        L.append(f"| {dev} | {r['width']} | {r['px']} | {r['batch']} | {r['layout']} | {r['dw_img_per_s']:.0f} | "
                 f"{r['finetune_img_per_s']:.0f} | **{r['dw_over_finetune']:.2f}x** | "
                 f"{r['trainable_params']['dw']:,} / {r['trainable_params']['finetune']:,} | "
                 f"{r['gflop_per_step']['dw']:.2f} / {r['gflop_per_step']['finetune']:.2f} "
                 f"({r['achieved_gflop_per_s']['dw']:.1f} / {r['achieved_gflop_per_s']['finetune']:.1f}){frac} | {mem_s} |")
    L += ["", "Inference of a batch mixing all 7 target domains (k images each), eval mode", "",
          "| device | width | px | k | batch | layout | stacked img/s | loop img/s | separate img/s | single-domain floor img/s | "
          "**stacked / loop** | **stacked / separate** | max abs diff (max abs logit) | state-dict elements: multi-domain net / 7 separate nets | "
          "peak RSS MiB stacked / loop / separate (growth) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["infer"]:
        mem = r.get("memory")
        if mem:
            mem_s = " / ".join(f"{mem[k]['peak_rss_mib']:.0f}" for k in ("stacked", "loop", "separate")) + " (" + \
                " / ".join(f"+{mem[k]['growth_mib']:.0f}" for k in ("stacked", "loop", "separate")) + ")"
        elif r.get("cuda_peak_mib"):
            mem_s = "CUDA " + " / ".join(f"{r['cuda_peak_mib'][k]:.0f}" for k in ("stacked", "loop", "separate"))
        else:
            mem_s = "–"
        dev = r["device"] + ("" if r["dtype"] == "float32" else " " + r["dtype"])
        L.append(f"| {dev} | {r['width']} | {r['px']} | {r['per_domain']} | {r['batch']} | {r['layout']} | {r['stacked_img_per_s']:.0f} | "
                 f"{r['loop_img_per_s']:.0f} | {r['separate_img_per_s']:.0f} | {r['single_img_per_s']:.0f} | "
                 f"**{r['stacked_over_loop']:.2f}x** | **{r['stacked_over_separate']:.2f}x** | "
                 f"{r['max_abs_diff']:.1e} ({r['max_abs_logit']:.0f}) | "
                 f"{r['params']['multi_domain_net']:,} / {r['params']['separate_nets']:,} | {mem_s} |")
    L += ["", f"Total wall time of the run: {res['wall_s']:.0f} s."]
    return "\n".join(L) + "\n"


def chart(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    tr = res["train"]
    ax = axes[0]
    lab = [f"{r['device']}{' bf16' if r['bf16'] else ''}\nw{r['width']} {r['px']}px\n{r['layout']}" for r in tr]
    x = np.arange(len(tr))
    ax.bar(x - 0.2, [r["dw_img_per_s"] for r in tr], 0.4, label="dw add-domain")
    ax.bar(x + 0.2, [r["finetune_img_per_s"] for r in tr], 0.4, label="finetune")
    for i, r in enumerate(tr):
        ax.annotate(f"{r['dw_over_finetune']:.2f}x", (i, max(r["dw_img_per_s"], r["finetune_img_per_s"])),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, lab, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("training images/s (log)")
    ax.set_title("Training: dw vs finetune (ratio on top)")
    ax.legend(fontsize=8)
    inf = res["infer"]
    ax = axes[1]
    x = np.arange(len(inf))
    modes = ["stacked", "loop", "separate", "single"]
    for j, k in enumerate(modes):
        ax.bar(x + (j - 1.5) * 0.2, [r[f"{k}_img_per_s"] for r in inf], 0.2, label=k if k != "single" else "single-domain floor")
    for i, r in enumerate(inf):
        ax.annotate(f"{r['stacked_over_loop']:.2f}x", (i, max(r[f'{k}_img_per_s'] for k in modes)), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(x, [f"w{r['width']}\n{r['px']}px\nk={r['per_domain']}\n{'NCHW' if r['layout'] == 'nchw' else 'CL'}"
                      for r in inf], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("inference images/s (log)")
    ax.set_title("Mixed 7-domain batch (stacked/loop on top; CL = channels_last)")
    ax.legend(fontsize=7)
    ax = axes[2]
    mem_rows = [r for r in inf if r.get("memory")]
    if mem_rows:
        x = np.arange(len(mem_rows))
        for j, k in enumerate(["stacked", "loop", "separate"]):
            ax.bar(x + (j - 1) * 0.27, [r["memory"][k]["peak_rss_mib"] for r in mem_rows], 0.27, label=k)
        ax.set_xticks(x, [f"w{r['width']}\n{r['px']}px\nk={r['per_domain']}\n{'NCHW' if r['layout'] == 'nchw' else 'CL'}"
                          for r in mem_rows], fontsize=7)
        ax.set_ylabel("peak RSS of a fresh process (MiB)")
        ax.set_title("Inference peak memory (CPU)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    a = parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if a.report_only:
        res = json.loads((a.out / "speed.json").read_text())
        (a.out / "speed.md").write_text(markdown(res))
        chart(res, a.out)
        print(markdown(res))
        return
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = {"command": "python bench/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "repeats": a.repeats}
    res["train"] = bench_train(train_configs(a.quick), a)
    res["infer"] = bench_infer(infer_configs(a.quick), a, layouts=("channels_last",))
    if not a.quick:  # NCHW for the small configurations, to show what channels_last buys on CPU
        res["infer"] += bench_infer([c for c in infer_configs(False) if c["width"] == 0.25 and c["px"] == 64], a,
                                    layouts=("nchw",))
    if torch.cuda.is_available():
        res["train"] += bench_train(train_configs(a.quick), a, device="cuda", amp=True, layouts=("channels_last",))
        res["infer"] += bench_infer(infer_configs(a.quick), a, device="cuda", dtype=torch.bfloat16,
                                    layouts=("channels_last",))
    res["wall_s"] = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "speed.json", res)
    (a.out / "speed.md").write_text(markdown(res))
    chart(res, a.out)
    print(markdown(res))


if __name__ == "__main__":
    main()
