"""onnxruntime vs PyTorch on CPU for an exported multi-domain network, on one mixed batch.

    PYTHONPATH=. python bench/export_speed.py            # ~1 min; bench/results/export_speed.{json,md}
    PYTHONPATH=. python bench/export_speed.py --quick    # smoke test (seconds), writes under /tmp

Network: `timm/tf_efficientnet_lite0` with its packaged ImageNet weights, method `dw`, 3 domains (class
counts 10, 43, 47; each domain's own tensors perturbed so that they differ), exported by
`mdl.core.export.export_network` (what `mdl export --format onnx` runs: the file is checked against
PyTorch before it is kept). A mixed batch of --batch images at --px, the domains interleaved, timed as
  pytorch-named    `net(x, domain=[names])`: the mixed forward `mdl predict` and `mdl serve` run
                   (per-sample depthwise filters folded into one grouped conv), channels_last as
                   DeviceSetup prepares it;
  pytorch-indexed  `net(x, domain=idx)`: the exported graph's path in PyTorch (per-sample norm affines;
                   every domain's depthwise convs, last pointwise conv and head on the whole batch, each
                   sample keeping its own domain's output: D times the work of those layers);
  onnxruntime      the exported file, CPUExecutionProvider, graph optimisations on (default).
Same thread count for all (--threads, else torch's; recorded); onnxruntime without spin-waiting. Median of --repeats rounds, interleaved round by round
(`bench._common.median_time`). Max |diff| of onnxruntime vs pytorch-named logits reported.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, median_time, write_json  # noqa: E402

DOMAINS = {"digits": 10, "signs": 43, "textures": 47}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="timm/tf_efficientnet_lite0")
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: torch's)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.arch, args.px, args.batch, args.repeats = "resnet26_dw", 32, 12, 3
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

    from mdl.core.export import export_network, onnx_session
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
    batch_names = [names[int(i)] for i in idx]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        t0 = time.perf_counter()
        report = export_network(net, "onnx", path, {"bench": True}, image_size=args.px)
        export_s = time.perf_counter() - t0
        sess = onnx_session(path, threads=torch.get_num_threads())
        feed = {"image": x.numpy(), "domain": idx.numpy()}
        dev = DeviceSetup.resolve("cpu")
        dev.prepare(net).eval()
        xb = dev.batch(x)

        def named():
            with torch.no_grad():
                return net(xb, domain=batch_names)

        def indexed():
            with torch.no_grad():
                return net(xb, domain=idx)

        def ort():
            return sess.run(["logits"], feed)[0]

        ref = named()
        got = torch.from_numpy(ort())
        finite = torch.isfinite(ref)
        diff = float((ref[finite] - got[finite]).abs().max())
        times = median_time([named, indexed, ort], repeats=args.repeats)
    rows = [{"variant": v, "ms_per_batch": round(1000 * t, 1), "images_per_s": round(args.batch / t, 1)}
            for v, t in zip(("pytorch-named", "pytorch-indexed", "onnxruntime"), times)]
    results = {"machine": machine(), "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "domains": DOMAINS, "export_seconds": round(export_s, 1), "export_checks": report["checks"],
               "max_abs_diff_onnxruntime_vs_pytorch": diff,
               "note": "provisional: taken while other engineers' jobs ran on the same 2-core machine", "rows": rows}
    write_json(args.out / "export_speed.json", results)
    md = [f"# onnxruntime vs PyTorch, CPU, {args.arch} dw with {len(DOMAINS)} domains, mixed batch of {args.batch} at "
          f"{args.px} px ({torch.get_num_threads()} threads)", "",
          "| variant | ms / batch | images/s |", "|---|---|---|"]
    md += [f"| {r['variant']} | {r['ms_per_batch']} | {r['images_per_s']} |" for r in rows]
    md += ["", f"max |onnxruntime - pytorch| over the logits: {diff:.2e}; export + check took {export_s:.1f} s"]
    (args.out / "export_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
