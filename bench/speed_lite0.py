"""Speed of the `dw` design on the EfficientNet-Lite0 trunk, as ratios measured in one run on one machine.

    PYTHONPATH=. python bench/speed_lite0.py            # ~1-2 min on 2 cores; bench/results/speed_lite0.{json,md}
    PYTHONPATH=. python bench/speed_lite0.py --quick    # smoke test (seconds), writes under /tmp

Network: `create_network("timm/tf_efficientnet_lite0", method, domains)` with random initialisation (speed
does not depend on the weights), CPU, torch's default thread count (recorded), channels_last model and
inputs exactly as `mdl.core.training.DeviceSetup("cpu")` prepares them for training and evaluation.

Training (what `mdl add-domain` runs per step: forward, cross-entropy, backward, SGD momentum + weight
decay step), one new domain on the frozen trunk, batch 32 at 64 px:
  dw        the domain owns its depthwise convs, norms, last pointwise conv and head (`net.train_domain`);
  finetune  the domain owns every tensor.
Inference (eval mode, `torch.no_grad`), method dw, 10 domains, a batch of k images per domain interleaved:
  stacked   ONE `net(x, domain=[...])` call (paper eq. 7: per-sample depthwise filters gathered into one
            grouped conv, per-sample norm affines, shared pointwise convs run once on the whole batch);
  loop      10 single-domain calls `net(x[idx_d], domain=d)`;
  single    one call on a single-domain batch of the same total size (the floor of any batching scheme).
The stacked and loop logits must agree (max |diff| reported).
Timing: 2 warm-up calls, then the median of `--repeats` rounds, the variants interleaved round by round
so that background load hits all of them alike (`bench._common.median_time`).
No CUDA branch: the machine this was written on had no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, median_time, write_json  # noqa: E402

ARCH = "timm/tf_efficientnet_lite0"
# 10 domains with the Visual Decathlon's class counts (ImageNet's 1000 left out: the heads would dominate).
DOMAINS = {"aircraft": 100, "cifar100": 100, "daimlerpedcls": 2, "dtd": 47, "gtsrb": 43, "omniglot": 1623,
           "svhn": 10, "ucf101": 101, "vgg-flowers": 102, "digits": 10}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--per-domain", type=int, nargs="+", default=[10, 1], help="images per domain in the mixed batch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 repeats, batch 4, 32 px, output under /tmp")
    ap.add_argument("--report-only", action="store_true", help="rebuild speed_lite0.md from speed_lite0.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.px, a.train_batch, a.per_domain = 2, 32, 4, [1]
        a.out = Path(os.environ.get("TMPDIR", "/tmp")) / "mdl-bench-speed-lite0-quick"
    return a


def _perturb(net, seed: int = 0) -> None:
    """Make every domain's tensors differ (so a wrong gather would show in max|diff|)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                if t.is_floating_point():
                    noise = 0.05 * torch.randn(t.shape, generator=g).to(t)
                    t.add_(noise.abs() if k.endswith("running_var") else noise)


def bench_train(a) -> dict:
    import torch
    import torch.nn.functional as F

    from mdl.core import create_network
    from mdl.core.training import DeviceSetup

    dev = DeviceSetup.resolve("cpu")
    d, k = "gtsrb", DOMAINS["gtsrb"]
    steps, info = {}, {}
    for method in ("dw", "finetune"):
        torch.manual_seed(0)
        net = create_network(ARCH, method=method, domains={d: k})
        dev.prepare(net)
        params = net.train_domain(d)  # train mode; only the domain's own tensors require grad
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        x = dev.batch(torch.randn(a.train_batch, 3, a.px, a.px))
        y = torch.randint(0, k, (a.train_batch,))

        def step(net=net, opt=opt, x=x, y=y):
            with dev.autocast():
                loss = F.cross_entropy(net(x, domain=d).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[method] = step
        info[method] = {"trainable_params": sum(p.numel() for p in params)}
    t_dw, t_ft = median_time([steps["dw"], steps["finetune"]], a.repeats)
    row = {"px": a.px, "batch": a.train_batch, "layout": "channels_last", "device": "cpu",
           "dw_img_per_s": a.train_batch / t_dw, "finetune_img_per_s": a.train_batch / t_ft,
           "dw_step_s": t_dw, "finetune_step_s": t_ft, "dw_over_finetune": t_ft / t_dw,
           "trainable_params": {m: info[m]["trainable_params"] for m in info}}
    print(f"[train] {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})}",
          file=sys.stderr, flush=True)
    return row


def bench_infer(a, per_domain: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mdl.core import create_network
    from mdl.core.training import DeviceSetup

    dev = DeviceSetup.resolve("cpu")
    torch.manual_seed(0)
    names = list(DOMAINS)
    net = create_network(ARCH, method="dw", domains=DOMAINS)
    _perturb(net)
    dev.prepare(net)
    net.eval()
    doms = [names[i % len(names)] for i in range(per_domain * len(names))]
    x = dev.batch(torch.randn(len(doms), 3, a.px, a.px))
    groups = {d: torch.tensor([i for i, n in enumerate(doms) if n == d]) for d in names}
    fns = {
        "stacked": lambda: net(x, domain=doms),
        "loop": lambda: [net(x.index_select(0, ix), domain=d) for d, ix in groups.items()],
        "single": lambda: net(x, domain=names[0]),
    }
    b = x.shape[0]
    with torch.no_grad():
        ts = dict(zip(fns, median_time(list(fns.values()), a.repeats)))
        stacked = fns["stacked"]()
        loop = fns["loop"]()
        diff = max((stacked[ix, : y.shape[1]] - y).abs().max().item() for (d, ix), y in zip(groups.items(), loop))
        pad_ok = all(torch.isinf(stacked[ix, y.shape[1]:]).all().item() for (d, ix), y in zip(groups.items(), loop))
        flops = {}
        for k in ("stacked", "loop", "single"):
            with FlopCounterMode(display=False) as fc:
                fns[k]()
            flops[k] = fc.get_total_flops() / 1e9
    row = {"px": a.px, "per_domain": per_domain, "domains": len(names), "batch": b, "layout": "channels_last",
           "device": "cpu", "grad": "no_grad", **{f"{k}_img_per_s": b / t for k, t in ts.items()},
           **{f"{k}_s": t for k, t in ts.items()},
           "stacked_over_loop": ts["loop"] / ts["stacked"], "stacked_over_single": ts["single"] / ts["stacked"],
           "loop_over_single": ts["single"] / ts["loop"],
           "max_abs_diff": diff, "max_abs_logit": stacked[torch.isfinite(stacked)].abs().max().item(),
           "padding_is_minus_inf": pad_ok, "gflop_per_call": flops,
           "params": {"multi_domain_net": sum(t.numel() for t in net.state_dict().values()),
                      "own_per_domain_mean": sum(net.parameter_counts()["domains"].values()) / len(names)}}
    print(f"[infer] {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if not isinstance(v, dict)})}",
          file=sys.stderr, flush=True)
    return row


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"Machine: {m['cpu']}, {m['cpus']} cores, torch {m['torch']} with {m['torch_threads']} threads (torch's default), "
         + (f"GPU {m['cuda']}" if m.get("cuda") else "**no GPU** (the CUDA bf16 + channels_last figures were not measured)")
         + f"; median of {res['repeats']} interleaved rounds after 2 warm-ups; load average at start "
         f"{m.get('load_average_1_5_15')}. Trunk `{ARCH}`, random init, channels_last (as `DeviceSetup` prepares it).", "",
         "Training step (forward, cross-entropy, backward, SGD step) adding one domain to the frozen trunk:", "",
         "| px | batch | dw img/s | finetune img/s | **dw / finetune** | trainable params dw / finetune |",
         "|---|---|---|---|---|---|"]
    r = res["train"]
    L.append(f"| {r['px']} | {r['batch']} | {r['dw_img_per_s']:.1f} | {r['finetune_img_per_s']:.1f} | "
             f"**{r['dw_over_finetune']:.2f}x** | {r['trainable_params']['dw']:,} / {r['trainable_params']['finetune']:,} |")
    L += ["", "Inference (eval, `torch.no_grad`, method dw) of a batch mixing 10 domains, k images each:", "",
          "| px | k | batch | stacked img/s | loop img/s | single-domain img/s | **stacked / loop** | stacked / single | "
          "loop / single | GFLOP per call stacked / loop / single | max abs diff stacked vs loop (max abs logit) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["infer"]:
        f = r["gflop_per_call"]
        L.append(f"| {r['px']} | {r['per_domain']} | {r['batch']} | {r['stacked_img_per_s']:.0f} | {r['loop_img_per_s']:.0f} | "
                 f"{r['single_img_per_s']:.0f} | **{r['stacked_over_loop']:.2f}x** | {r['stacked_over_single']:.2f}x | "
                 f"{r['loop_over_single']:.2f}x | {f['stacked']:.2f} / {f['loop']:.2f} / {f['single']:.2f} | "
                 f"{r['max_abs_diff']:.1e} ({r['max_abs_logit']:.1f}) |")
    L += ["", "Ratios > 1 mean the left-hand path is faster. " + f"Total wall time of the run: {res['wall_s']:.0f} s."]
    return "\n".join(L) + "\n"


def main(argv=None):
    a = parse_args(argv)
    if a.report_only:
        res = json.loads((a.out / "speed_lite0.json").read_text())
        (a.out / "speed_lite0.md").write_text(markdown(res))
        print(markdown(res))
        return
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = {"command": "python bench/speed_lite0.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "repeats": a.repeats, "arch": ARCH, "cuda_available": torch.cuda.is_available()}
    res["train"] = bench_train(a)
    res["infer"] = [bench_infer(a, k) for k in a.per_domain]
    res["wall_s"] = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "speed_lite0.json", res)
    (a.out / "speed_lite0.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
