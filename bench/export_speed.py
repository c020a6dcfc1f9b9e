"""Exported multi-domain networks on CPU: a mixed batch against a one-domain batch of the same size, in
PyTorch, onnxruntime and a torch.export program (issue 18: onnxruntime mixed / single >= 0.8 at batch
100 over 10 domains).

    PYTHONPATH=. python bench/export_speed.py            # alone; ~5 min on 2 cores (the .pt2 export is slow)
    PYTHONPATH=. python bench/export_speed.py --quick    # smoke test, writes under /tmp

Network: `timm/tf_efficientnet_lite0` with its packaged ImageNet weights, method `dw`, 10 domains with the
Visual Decathlon's class counts (ImageNet's 1000 left out; each domain's own tensors perturbed so that
they differ), exported by `mdl.core.export.export_network` (what `mdl export` runs: the file is checked
against PyTorch before it is kept). The graph sorts the batch by domain and runs each domain's layers on
its slice only. A batch of --batch images at --px, timed as
  pytorch          `net(x, domain=[names])` (mixed, the domains interleaved) vs `net(x, domain=name)`,
                   channels_last as DeviceSetup prepares it: what `mdl predict` and `mdl serve` run;
  onnxruntime      the .onnx file (CPUExecutionProvider, default graph optimisations, no spin-waiting),
                   mixed index vs every sample at index 0;
  pt2              the .pt2 file (`torch.export.load(...).module()`), the same two index tensors.
Same thread count for all (--threads, else torch's; recorded). Median of --repeats rounds, interleaved
round by round (`bench._common.median_time`). Max |diff| of each runtime vs PyTorch's mixed logits.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, median_time, write_json  # noqa: E402

DOMAINS = {"aircraft": 100, "cifar100": 100, "daimlerpedcls": 2, "dtd": 47, "gtsrb": 43, "omniglot": 1623,
           "svhn": 10, "ucf101": 101, "vgg-flowers": 102, "digits": 10}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="timm/tf_efficientnet_lite0")
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--no-pt2", dest="pt2", action="store_false", help="skip the torch.export program")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: torch's)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.arch, args.px, args.batch, args.repeats = "resnet26_dw", 32, 20, 3
        args.out = Path(tempfile.gettempdir()) / "mdl-bench-export"
    return args


def build(arch: str):
    import torch

    from mdl.core import create_network

    torch.manual_seed(0)
    net = create_network(arch, "dw", {}, width=1.0 if arch.startswith("timm/") else 0.25)
    if arch == "timm/tf_efficientnet_lite0":
        from mdl.core.pretrained import lite0_imagenet_state_dict

        net.load_trunk_state_dict(lite0_imagenet_state_dict())
    for name, k in DOMAINS.items():
        net.add_domain(name, k)
    with torch.no_grad():
        for d in net.domains:
            for key, t in net.domain_tensors(d).items():
                t.mul_(1 + 0.2 * torch.rand_like(t)) if key.endswith("running_var") else t.add_(0.02 * torch.randn_like(t))
    return net.eval()


def main(argv=None):
    import torch

    from mdl.core.export import export_network, load_pt2, onnx_session
    from mdl.core.training import DeviceSetup

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    net = build(args.arch)
    names = list(DOMAINS)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.px, args.px, generator=g)
    idx = torch.arange(args.batch) % len(names)
    single = torch.zeros_like(idx)
    batch_names = [names[int(i)] for i in idx]
    fns, exports = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("onnx", "pt2") if args.pt2 else ("onnx",):
            t0 = time.perf_counter()
            report = export_network(net, fmt, Path(tmp) / f"net.{fmt}", {"bench": True}, image_size=args.px)
            exports[fmt] = {"seconds": round(time.perf_counter() - t0, 1), "checks": report["checks"]}
            print(f"[export] {fmt}: {exports[fmt]}", file=sys.stderr, flush=True)
        sess = onnx_session(Path(tmp) / "net.onnx", threads=torch.get_num_threads())
        fns["onnxruntime-mixed"] = lambda: torch.from_numpy(sess.run(["logits"], {"image": x.numpy(), "domain": idx.numpy()})[0])
        fns["onnxruntime-single"] = lambda: sess.run(["logits"], {"image": x.numpy(), "domain": single.numpy()})[0]
        if args.pt2:
            program = load_pt2(Path(tmp) / "net.pt2")
            fns["pt2-mixed"] = lambda: program(x, idx)
            fns["pt2-single"] = lambda: program(x, single)
        dev = DeviceSetup.resolve("cpu")
        dev.prepare(net).eval()
        xb = dev.batch(x)
        fns["pytorch-mixed"] = lambda: net(xb, domain=batch_names)
        fns["pytorch-single"] = lambda: net(xb, domain=names[0])
        with torch.no_grad():
            ref = fns["pytorch-mixed"]()
            finite = torch.isfinite(ref)
            diffs = {k.rsplit("-", 1)[0]: float((ref[finite] - torch.as_tensor(fns[k]()).float()[finite]).abs().max())
                     for k in fns if k.endswith("-mixed") and not k.startswith("pytorch")}
            times = dict(zip(fns, median_time(list(fns.values()), repeats=args.repeats)))
    rows = [{"variant": v, "ms_per_batch": round(1000 * t, 1), "images_per_s": round(args.batch / t, 1)}
            for v, t in times.items()]
    ratios = {rt: round(times[f"{rt}-single"] / times[f"{rt}-mixed"], 3)
              for rt in ("pytorch", "onnxruntime", "pt2") if f"{rt}-mixed" in times}
    results = {"machine": machine(), "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "domains": DOMAINS, "exports": exports, "max_abs_diff_vs_pytorch_mixed": diffs,
               "mixed_over_single": ratios, "rows": rows}
    write_json(args.out / "export_speed.json", results)
    m = results["machine"]
    md = [f"# Exported networks, CPU: {args.arch} dw with {len(DOMAINS)} domains, batch {args.batch} at {args.px} px "
          f"({torch.get_num_threads()} threads)", "",
          f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, load average at start {m['load_average_1_5_15']}.", "",
          "| runtime | mixed ms / batch | single ms / batch | mixed img/s | single img/s | **mixed / single** | max abs diff vs PyTorch |",
          "|---|---|---|---|---|---|---|"]
    for rt, ratio in ratios.items():
        mx, sg = times[f"{rt}-mixed"], times[f"{rt}-single"]
        md.append(f"| {rt} | {1000 * mx:.1f} | {1000 * sg:.1f} | {args.batch / mx:.1f} | {args.batch / sg:.1f} | "
                  f"**{ratio:.2f}** | {diffs.get(rt, 0.0):.1e} |")
    md += ["", "Export + check: " + ", ".join(f"{k} {v['seconds']} s" for k, v in exports.items()) + "."]
    (args.out / "export_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
