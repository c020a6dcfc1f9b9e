"""Mixed-domain batches against single-domain ones (issue 18): eval mode, `torch.no_grad`, method `dw`,
10 domains with the Visual Decathlon's class counts (ImageNet's 1000 left out), 64 px, channels_last as
`DeviceSetup` prepares it, random initialisation with every domain's tensors perturbed (speed does not
depend on the weights; the perturbation makes the equality check mean something).

For each trunk and k images per domain (batch 10k, the domains interleaved: the worst order for a
sort-free path), one run times, in interleaved rounds (median):

  single      a batch of the same size from one domain (the cost to match)
  static      the same, on a network told that its tensors do not change (``assume_static``: no check of
              every domain tensor at each forward), as ``mdl serve`` and ``predict`` hold theirs
  auto        the mixed batch as mdl runs it (the default ``MIXED_DEPTHWISE = "auto"``: the whole trunk
              domain-folded, domain_fold.py, where the trunk qualifies; else per layer: per-sample below
              PER_SAMPLE_BELOW images per domain or where the filters are a small share of their
              inputs, else folded on small stride-1 maps, else slices)
  slices      the mixed batch, depthwise convs per domain on its slice of the sorted batch (per layer)
  per-sample  the mixed batch, depthwise convs as one grouped conv with per-sample filters (eq. 7)
  loop        one forward per domain on its samples (what a user would write without mdl)
  single-mm   the one-domain batch with every plain 1x1 conv run as a matmul, as the mixed batch runs
              them at few images per domain (not what mdl runs for one domain: a reference, because
              the matmul alone speeds a small one-domain batch up on the CPU, and a mixed batch should
              not look cheap only by a trick its baseline lacks)
  single-fold the one-domain batch run through the domain-folded path itself (a network of that domain
              alone, D = 1: every trick the mixed batch has, 1x1 matmuls, BNs folded into the convs
              before them, depthwise convs without padded copies, held static); not what mdl runs for one
              domain: the strictest reference, where the ratio is the cost of the other domains alone
              (trunks that fold only)

and checks that the mixed outputs equal the per-domain forwards. The ratio that the issue's targets
read is single time / mixed time (>= 0.9 at k = 10, >= 0.8 at k = 1 on Lite0) for what mdl runs
(``auto``), reported beside the fixed modes (``folded`` is in ``auto``'s choice at k = 10 only).

Each cell runs twice, in a child process per allocator regime (bench._common.STEADY_MALLOC): ``steady``
(freed memory stays in the process: no page faults on the next forward; stable from run to run) and
``default`` (glibc as it starts: large buffers come back as fresh pages, by an amount that varies
between processes, and the one-domain batch pays more of it than the mixed one).

    PYTHONPATH=. python bench/mixed_batch.py            # alone on the machine; ~4 min on 2 cores
    PYTHONPATH=. python bench/mixed_batch.py --report-only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MALLOC_REGIMES, RESULTS, machine, malloc_env, malloc_regime, median_time, write_json  # noqa: E402

ARCHS = ["timm/tf_efficientnet_lite0", "resnet26_dw", "timm/mobilenetv3_large_100"]
DOMAINS = {"aircraft": 100, "cifar100": 100, "daimlerpedcls": 2, "dtd": 47, "gtsrb": 43, "omniglot": 1623,
           "svhn": 10, "ucf101": 101, "vgg-flowers": 102, "digits": 10}
OUT = RESULTS / "mixed_batch.json"


def perturb(net, seed: int = 0) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in net.domains:
            for k, t in net.domain_tensors(d).items():
                noise = torch.rand(t.shape, generator=g)
                t.mul_(1 + 0.2 * noise) if k.endswith("running_var") else t.add_(0.02 * (noise - 0.5))


def bench(arch: str, k: int, px: int, repeats: int) -> dict:
    import torch

    from mdl.core import create_network
    from mdl.core.nets import wrappers
    from mdl.core.training import DeviceSetup

    dev = DeviceSetup.resolve("cpu")
    torch.manual_seed(0)
    net = create_network(arch, method="dw", domains=DOMAINS)
    perturb(net)
    dev.prepare(net)
    net.eval()
    names = list(DOMAINS)
    doms = [names[i % len(names)] for i in range(k * len(names))]
    x = dev.batch(torch.randn(len(doms), 3, px, px))
    groups = {d: torch.tensor([i for i, n in enumerate(doms) if n == d]) for d in names}
    chosen = wrappers.MIXED_DEPTHWISE

    def mixed(mode):
        def fn():
            wrappers.MIXED_DEPTHWISE = mode
            try:
                return net(x, domain=doms)
            finally:
                wrappers.MIXED_DEPTHWISE = chosen
        return fn

    from torch import nn

    from mdl.core.nets import layers

    conv_forward = nn.Conv2d.forward

    def as_matmul(conv, t):
        return layers.pointwise_linear(conv, t) if layers.is_plain_pointwise(conv) and layers.matmul_layout(t) \
            else conv_forward(conv, t)

    def single_mm():
        nn.Conv2d.forward = as_matmul  # the trunk's shared 1x1 convs (SharedPointwise) and per-domain copies
        try:
            return net(x, domain=names[0])
        finally:
            nn.Conv2d.forward = conv_forward

    def copy_of(domains):  # a network of the same tensors for ``domains``
        other = create_network(arch, method="dw", domains={d: DOMAINS[d] for d in domains})
        other.load_shared_state_dict(net.shared_state_dict())
        for d in domains:
            other.load_domain_state_dict(d, net.domain_state_dict(d))
        dev.prepare(other)
        return other.eval()

    # the one-domain batch through the domain-folded path itself (D = 1): a network of that domain alone
    one = copy_of(names[:1]).assume_static()  # strictest: no per-forward check either
    static = copy_of(names).assume_static()  # as `mdl serve` and `predict` hold their networks
    zeros = torch.zeros(len(doms), dtype=torch.long)

    def single_fold():  # the sorted-batch entry with one slice: what a mixed forward runs, for one domain
        return one._sorted_forward(x, None, zeros, [(names[0], 0, len(doms))], [names[0]])

    fns = {"single": lambda: net(x, domain=names[0]), "single-mm": single_mm, "auto": mixed("auto"),
           "static": lambda: static(x, domain=doms), "slices": mixed("slices"),
           "per-sample": mixed("per-sample"), "folded": mixed("folded"),
           "loop": lambda: [net(x[ix], domain=d) for d, ix in groups.items()]}
    if one.foldable():
        fns["single-fold"] = single_fold
    with torch.no_grad():
        ts = dict(zip(fns, median_time(list(fns.values()), repeats)))
        loop = fns["loop"]()
        diffs = {}
        for mode in ("auto", "static", "slices", "per-sample", "folded"):
            out = fns[mode]()
            diffs[mode] = max((out[ix, : y.shape[1]] - y).abs().max().item() for (d, ix), y in zip(groups.items(), loop))
        if "single-fold" in fns:
            diffs["single-fold"] = (fns["single-fold"]() - fns["single"]()).abs().max().item()
    b = len(doms)
    row = {"arch": arch, "per_domain": k, "batch": b, "px": px, "chosen_mode": chosen, "malloc": malloc_regime(),
           **{f"{n}_img_per_s": round(b / t, 1) for n, t in ts.items()},
           **{f"{n}_over_single": round(ts["single"] / t, 3) for n, t in ts.items() if n != "single"},
           "auto_over_single_mm": round(ts["single-mm"] / ts["auto"], 3),
           **({"auto_over_single_fold": round(ts["single-fold"] / ts["auto"], 3),
               "static_over_single_fold": round(ts["single-fold"] / ts["static"], 3)} if "single-fold" in ts else {}),
           "max_abs_diff_vs_loop": diffs}
    print(f"[mixed] {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Mixed-domain batches vs single-domain batches (`bench/mixed_batch.py`)", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"load average at start {m['load_average_1_5_15']}; "
             + (f"GPU {m['cuda']}." if m.get("cuda") else "**no GPU** (CUDA figures not measured)."), "",
             f"Eval, `torch.no_grad`, method dw, 10 domains (decathlon class counts), {res['rows'][0]['px']} px, "
             f"channels_last, median of {res['repeats']} interleaved rounds. Ratios: single-domain time / this "
             "path's time at the same batch size (1.0 = a mixed batch costs what a one-domain batch costs). "
             "malloc: `steady` keeps freed memory in the process (no page faults: stable), `default` is glibc "
             "as it starts (see the script's docstring).", "",
             "| trunk | k per domain | batch | malloc | single img/s | **mdl (auto) / single** | static / single | "
             "slices / single | per-sample / single | folded / single | loop / single | single-mm / single | "
             "mdl / single-mm | single-fold / single | **mdl / single-fold** | static / single-fold | "
             "max abs diff vs loop (auto) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(res["rows"], key=lambda r: (ARCHS.index(r["arch"]) if r["arch"] in ARCHS else 99, -r["per_domain"],
                                                 MALLOC_REGIMES.index(r.get("malloc", "default")))):
        d = r["max_abs_diff_vs_loop"]
        lines.append(f"| `{r['arch']}` | {r['per_domain']} | {r['batch']} | {r.get('malloc', 'default')} | "
                     f"{r['single_img_per_s']} | **{r['auto_over_single']:.2f}** | {r.get('static_over_single', float('nan')):.2f} | "
                     f"{r['slices_over_single']:.2f} | "
                     f"{r['per-sample_over_single']:.2f} | {r.get('folded_over_single', float('nan')):.2f} | "
                     f"{r['loop_over_single']:.2f} | {r.get('single-mm_over_single', float('nan')):.2f} | "
                     f"{r.get('auto_over_single_mm', float('nan')):.2f} | "
                     + (f"{r['single-fold_over_single']:.2f} | **{r['auto_over_single_fold']:.2f}** | "
                        f"{r['static_over_single_fold']:.2f} | " if "auto_over_single_fold" in r else "— | — | — | ")
                     + f"{d['auto']:.1e} |")
    lines += ["", f"mdl runs mixed eval batches in mode `{res['rows'][0]['chosen_mode']}` "
              "(`mdl.core.nets.wrappers.MIXED_DEPTHWISE`): the whole trunk domain-folded "
              "(`mdl.core.nets.domain_fold`: the domains side by side in channels) where the trunk qualifies "
              "(Lite0, MobileNetV3; not ResNet-26, which fx cannot trace) and the padded slots waste at most "
              f"{res.get('fold_waste', 1.5)}x; otherwise per layer: per-sample below "
              f"{res.get('per_sample_below', '?')} images per domain or when the depthwise filters are under "
              f"{res.get('per_sample_filter_share', '?')} of their inputs' size, else folded on small stride-1 maps, "
              "else slices. The slices / per-sample / folded columns force that per-layer mode (no whole-trunk fold).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help=f"trunks (default: {', '.join(ARCHS)})")
    ap.add_argument("--per-domain", type=int, action="append", help="k images per domain (default 10 and 1)")
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--malloc", choices=("both",) + MALLOC_REGIMES, default="both",
                    help="allocator regime(s): each runs in a child process started with it")
    ap.add_argument("--rows-out", type=Path, help=argparse.SUPPRESS)  # a child's rows, for its parent
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    if a.report_only:
        res = json.loads(OUT.read_text())
    elif a.rows_out is not None:  # a child: this process's regime is the one it was started with
        rows = [bench(arch, k, a.px, a.repeats) for arch in a.arch or ARCHS for k in a.per_domain or (10, 1)]
        write_json(a.rows_out, {"machine": machine(), "rows": rows})
        return
    else:
        import subprocess
        import tempfile

        from mdl.core.nets import domain_fold, wrappers

        res = {"machine": machine(), "repeats": a.repeats, "per_sample_below": wrappers.PER_SAMPLE_BELOW,
               "per_sample_filter_share": wrappers.PER_SAMPLE_FILTER_SHARE,
               "fold_waste": domain_fold.FOLD_WASTE, "rows": [],
               "machines": {}}
        regimes = MALLOC_REGIMES if a.malloc == "both" else (a.malloc,)
        cell_args = [f"--px={a.px}", f"--repeats={a.repeats}"] + [f"--arch={x}" for x in a.arch or []] + \
            [f"--per-domain={k}" for k in a.per_domain or []]
        with tempfile.TemporaryDirectory() as tmp:
            for regime in regimes:
                out = Path(tmp) / f"{regime}.json"
                subprocess.run([sys.executable, __file__, *cell_args, f"--rows-out={out}"], env=malloc_env(regime),
                               check=True)
                child = json.loads(out.read_text())
                assert child["machine"]["malloc"] == regime, child["machine"]
                res["rows"] += child["rows"]
                res["machines"][regime] = child["machine"]
        write_json(OUT, res)
    OUT.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
