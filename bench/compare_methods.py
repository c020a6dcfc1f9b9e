"""Every method on bundled target domains, same budget and seeds: the paper's Table 2 and Table 3.

Two trunk modes (`--trunk`):

  lite0 (default)  the ImageNet EfficientNet-Lite0 trunk (`timm/tf_efficientnet_lite0`), imported once
                   offline with `mdl.workflows.trunks.import_trunk` (no pretraining here); methods dw,
                   dw-sharing, bn, classifier-only, finetune (the residual adapters need dense kxk convs,
                   which Lite0 lacks); 4 targets at builtin scale 0.25, 72 px (crop 64), 3 epochs, lr 0.01;
                   one side cell (dw at lr 0.1, digits, seed 0) to show the lr choice; `late` gates, 1 epoch.
                   Outputs: bench/results/compare_methods_lite0.{json,md,png} (+ compare_gates_lite0.png).
  resnet26         the earlier design: resnet26_dw and resnet26 pretrained here on `builtin:source`
                   (seed 0), width 0.25, 32 px; all 8 rows and 4 gate placements.
                   Outputs: bench/results/compare_methods.{json,md,png} (+ compare_gates.png).

    PYTHONPATH=. python bench/compare_methods.py                 # lite0, ~15 min on 2 cores
    PYTHONPATH=. python bench/compare_methods.py --quick         # smoke test (a minute), under --work
    PYTHONPATH=. python bench/compare_methods.py --report-only   # tables/chart from the JSON
    MDL_CACHE=/tmp/benchcache OMP_NUM_THREADS=1 PYTHONPATH=. python bench/compare_methods.py --trunk resnet26 --threads 1

It drives the real workflows, not a re-implementation: one base registry home per trunk holds the trunk
(imported, or pretrained with `mdl.workflows.train.pretrain`); every (trunk, method, seed) then gets its own
copy of that home, and `mdl.workflows.train.add_domain` trains and registers each target domain in it (so the
`dw` home of a seed holds exactly that seed's `dw` adapters plus the trunk's own source domain, which is
what the soft-sharing gates of `mdl.workflows.gates.train_gate` mix). Accuracies are read back from the
registry: validation (used only to pick the best epoch) from `DomainVersionRecord.accuracy`, the table's
test accuracy from `config["test_accuracy"]`, training speed from `config["train_images_per_s"]`;
gated test accuracy is measured on the registered gate (`gated_network`). Decathlon score:
`mdl.core.scoring.domain_score` with, for each domain, the seed-mean test accuracy of `finetune` on the
mode's first trunk as the reference (the role of the official baseline constants), so `finetune`
itself scores ~250 per domain.

Resumable: every finished cell is written to the raw JSON at once and skipped on the next run with the
same settings (a cell killed half way is retrained from its start; seeds make that reproducible).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, mean_spread, show_progress, write_json  # noqa: E402

LITE0 = "timm/tf_efficientnet_lite0"
# (row label, trunk, method). The first trunk hosts the paper's method and its baselines.
METHODS_RESNET = [
    ("dw", "resnet26_dw", "dw"),
    ("dw-sharing", "resnet26_dw", "dw-sharing"),
    ("classifier-only", "resnet26_dw", "classifier-only"),
    ("finetune", "resnet26_dw", "finetune"),
    ("bn", "resnet26", "bn"),
    ("parallel-adapter", "resnet26", "parallel-adapter"),
    ("series-adapter", "resnet26", "series-adapter"),
    ("finetune@resnet26", "resnet26", "finetune"),
    # group rows (one job over all targets of a seed, not one cell per domain): mdl.workflows.compress / mdl.workflows.joint
    ("parallel-adapter-svd", "resnet26", "parallel-adapter-svd"),  # the parallel-adapter cells, compressed
    ("joint-bn", "resnet26", "bn"),                                # jointly trained trunk + per-domain BN
    ("joint-in", "resnet26_in", "classifier-only"),                # jointly trained instance-norm trunk, heads only
]
METHODS_LITE0 = [(m, LITE0, m) for m in ("dw", "dw-sharing", "bn", "classifier-only", "finetune")]
MODES = {
    "lite0": {"methods": METHODS_LITE0, "stem": "compare_methods_lite0", "pretrained_here": False,
              "defaults": {"width": 1.0, "image_size": 72, "epochs": 3, "gate_epochs": 1, "lr": 0.01, "gate_lr": 0.1,
                           "scale": 0.25, "domains": ["digits", "textures", "signs", "pedestrians"],
                           "placements": ["late"], "side": ["dw@lr0.1:digits:0"]}},
    "resnet26": {"methods": METHODS_RESNET, "stem": "compare_methods", "pretrained_here": True,
                 "defaults": {"width": 0.25, "image_size": 32, "epochs": 4, "gate_epochs": 2, "lr": 0.1, "gate_lr": None,
                              "scale": 0.25, "domains": None, "placements": ["early", "middle", "late", "all"],
                              "side": []}},
}
REFERENCE = "finetune"  # the score's reference row
OPTIONAL = {"finetune@resnet26"}  # run last (the reference for the resnet26 rows is still `finetune` above)
GROUP = {"parallel-adapter-svd", "joint-bn", "joint-in"}  # trained per seed over all targets at once
PLACEMENTS = ["early", "middle", "late", "all"]
SOURCE = "source"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trunk", choices=list(MODES), default="lite0",
                    help="lite0: the imported ImageNet Lite0 trunk (default); resnet26: the earlier pretrained-here design")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--width", type=float, default=None, help="resnet26 mode only (timm trunks have width 1)")
    ap.add_argument("--image-size", type=int, default=None, help="resize size; training crops 8/9 of it (72 -> 64, 32 -> 28)")
    ap.add_argument("--pretrain-epochs", type=int, default=4, help="resnet26 mode only")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per (method, domain)")
    ap.add_argument("--gate-epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64, help="per (method, domain) and for gates")
    ap.add_argument("--pretrain-batch-size", type=int, default=128, help="resnet26 mode only")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--gate-lr", type=float, default=None, help="gates' lr (default: lite0 0.1, resnet26 = --lr)")
    ap.add_argument("--scale", type=float, default=None,
                    help="size of the target domains (builtin:NAME?scale=S; 1 = full, 0.25 keeps a quarter of every split)")
    ap.add_argument("--source-scale", type=float, default=1.0, help="size of the pretraining source domain (resnet26)")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--domains", nargs="+", default=None, help="target domains")
    ap.add_argument("--placements", nargs="*", default=None, choices=PLACEMENTS)
    ap.add_argument("--side", nargs="*", default=None,
                    help="side cells LABEL@lrX:DOMAIN:SEED, e.g. dw@lr0.1:digits:0 (method dw at lr 0.1), not in the tables' "
                         "rows or scores")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mdl-bench-compare",
                    help="registry homes (one per trunk, method, seed) live here")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: builtin scale 0.05, 1 epoch each, seed 0, dw+finetune on 2 domains, late gate, the "
                         "side cell; writes under --work, not bench/results")
    ap.add_argument("--rank-ratio", type=float, default=0.5, help="parallel-adapter-svd: K / C_in (the paper's K = C/2)")
    ap.add_argument("--svd-epochs", type=int, default=1, help="parallel-adapter-svd: fine-tuning epochs per domain")
    ap.add_argument("--svd-lr", type=float, default=0.01, help="parallel-adapter-svd: fine-tuning lr")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables and charts from the raw JSON")
    ap.add_argument("--fresh", action="store_true", help="start over: ignore finished cells in the raw JSON, wipe the registry homes")
    a = ap.parse_args(argv)
    mode = MODES[a.trunk]
    for k, v in mode["defaults"].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.gate_lr is None:
        a.gate_lr = a.lr
    if a.trunk == "lite0" and a.width != 1.0:
        ap.error("--width is for the resnet26 mode only (timm trunks have width 1)")
    valid = [m[0] for m in mode["methods"]]
    a.methods = a.methods or valid
    bad = [m for m in a.methods if m not in valid]
    if bad:
        ap.error(f"--methods {bad} not in the {a.trunk} mode's rows: {valid}")
    if a.quick:
        a.scale = a.source_scale = 0.05
        a.seeds, a.pretrain_epochs, a.epochs, a.gate_epochs, a.svd_epochs = [0], 1, 1, 1, 1
        group = [m for m in a.methods if m in GROUP]  # a smoke test of the group rows keeps them
        a.methods = ["finetune", "bn", "parallel-adapter", *group] if group else ["dw", "finetune"]
        a.placements = [] if group else ["late"]
        a.domains = a.domains or ["digits", "pedestrians"]
        a.side = [s for s in a.side if s.split(":")[1] in a.domains] or a.side[:0]
        a.work = a.work / "quick"
        a.out = a.work / "results"
    return a


def parse_side(spec: str) -> dict:
    """'dw@lr0.1:digits:0' -> {label, method, lr, domain, seed}."""
    label, domain, seed = spec.split(":")
    method, _, lr = label.partition("@lr")
    return {"label": label, "method": method, "lr": float(lr), "domain": domain, "seed": int(seed)}


def settings(a) -> dict:
    """What the results depend on (a changed value invalidates the cached cells)."""
    cfg = {"trunk_mode": a.trunk, "width": a.width, "image_size": a.image_size, "epochs": a.epochs,
           "gate_epochs": a.gate_epochs, "batch_size": a.batch_size, "lr": a.lr, "gate_lr": a.gate_lr,
           "target_scale": a.scale, "workers": 0, "device": "cpu"}
    if GROUP & set(a.methods):  # only then: earlier tables' cached cells stay valid
        cfg |= {"svd_rank_ratio": a.rank_ratio, "svd_epochs": a.svd_epochs, "svd_lr": a.svd_lr, "joint_lr": a.lr,
                "joint_epochs": a.epochs}
    if MODES[a.trunk]["pretrained_here"]:
        cfg |= {"pretrain_epochs": a.pretrain_epochs, "pretrain_batch_size": a.pretrain_batch_size,
                "source_scale": a.source_scale, "pretrain_seed": 0}
    return cfg


def builtin(name: str, scale: float) -> str:
    return f"builtin:{name}" if scale == 1 else f"builtin:{name}?scale={scale:g}"


# --------------------------------------------------------------------------------------------- running
class Runner:
    def __init__(self, a):
        self.a = a
        self.mode = MODES[a.trunk]
        self.cfg = settings(a)
        digest = hashlib.sha256(json.dumps(self.cfg, sort_keys=True).encode()).hexdigest()[:10]
        self.work = a.work / digest
        if a.fresh:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.raw_path = a.out / f"{self.mode['stem']}.json"
        self.raw = self._load()

    def _load(self) -> dict:
        if self.raw_path.is_file() and not self.a.fresh:
            raw = json.loads(self.raw_path.read_text())
            if raw.get("settings") == self.cfg:
                raw.setdefault("side", {})
                raw.setdefault("groups", {})
                return raw
            print(f"note: {self.raw_path} holds results of other settings; starting a new table", file=sys.stderr)
        return {"settings": self.cfg, "pretrain": {}, "cells": {}, "side": {}, "gates": {}, "groups": {}, "timing": {}}

    def save(self) -> None:
        self.raw["machine"] = machine()
        write_json(self.raw_path, self.raw)

    def opts(self, epochs: int, seed: int, batch_size: int | None = None, lr: float | None = None):
        from mdl.workflows.train import TrainOptions

        return TrainOptions(epochs=epochs, lr=lr or self.a.lr, batch_size=batch_size or self.a.batch_size, device="cpu",
                            workers=0, seed=seed)

    def base_home(self, arch: str) -> Path:
        """The trunk's registry home: imported (lite0) or pretrained once (seed 0), then reused."""
        from mdl.registry.store import Registry

        home = self.work / f"base-{arch.replace('/', '_')}"
        reg, _ = Registry.init(home)
        try:
            if not reg.trunks() or arch not in self.raw["pretrain"]:
                if reg.trunks():  # registered but not recorded (killed in between): start the home over
                    reg.close()
                    shutil.rmtree(home)
                    reg, _ = Registry.init(home)
                t0 = time.perf_counter()
                if self.mode["pretrained_here"]:
                    from mdl.workflows.train import pretrain

                    trunk, src = pretrain(reg, builtin(SOURCE, self.a.source_scale), name=SOURCE, arch=arch,
                                          width=self.a.width, image_size=self.a.image_size,
                                          opts=self.opts(self.a.pretrain_epochs, 0, self.a.pretrain_batch_size))
                    self.raw["pretrain"][arch] = {
                        "val_accuracy": src.accuracy, "test_accuracy": src.config["test_accuracy"],
                        "trunk_params": trunk.num_params, "source_domain_params": src.domain_params,
                        "best_epoch": src.config["best_epoch"], "train_images_per_s": trunk.config["train_images_per_s"],
                        "wall_s": round(time.perf_counter() - t0, 1)}
                else:
                    from mdl.workflows.trunks import import_trunk

                    trunk, src = import_trunk(reg, arch=arch, image_size=self.a.image_size)
                    self.raw["pretrain"][arch] = {
                        "imported": trunk.provenance.get("source"),
                        "trunk_params": trunk.num_params, "source": src.name if src else None,
                        "source_method": src.method if src else None,
                        "source_domain_params": src.domain_params if src else None,
                        "image_size": self.a.image_size, "wall_s": round(time.perf_counter() - t0, 1)}
                self.save()
        finally:
            reg.close()
        return home

    def home(self, arch: str, method: str, seed: int, tag: str = "") -> Path:
        home = self.work / f"{arch.replace('/', '_')}-{method}{tag}-s{seed}"
        if not home.exists():
            base = self.base_home(arch)
            tmp = home.with_name(home.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("registry.lock", "runs"))
            os.replace(tmp, home)
        return home

    def _train(self, home: Path, label: str, arch: str, method: str, domain: str, seed: int, lr: float) -> dict:
        from mdl.workflows.train import add_domain
        from mdl.registry.store import Registry

        reg = Registry.open(home)
        try:
            t0 = time.perf_counter()
            v = add_domain(reg, domain, builtin(domain, self.a.scale), method=method, trunk=arch,
                           opts=self.opts(self.a.epochs, seed, lr=lr))
            wall = time.perf_counter() - t0
        finally:
            reg.close()
        return {
            "method": label, "arch": arch, "domain": domain, "seed": seed, "lr": lr, "version": v.version,
            "val_accuracy": v.accuracy, "test_accuracy": v.config["test_accuracy"], "domain_params": v.domain_params,
            "num_classes": v.num_classes, "train_images": v.data["sizes"]["train"],
            "test_images": v.data["sizes"].get("test"), "best_epoch": v.config["best_epoch"],
            "history": v.config["history"], "weight_decay": v.config["recipe"]["weight_decay"],
            "train_images_per_s": round(v.config["train_images_per_s"], 1), "wall_s": round(wall, 1)}

    def cell(self, label: str, arch: str, method: str, domain: str, seed: int) -> None:
        key = f"{label}|{domain}|{seed}"
        if key in self.raw["cells"]:
            return
        c = self._train(self.home(arch, method, seed), label, arch, method, domain, seed, self.a.lr)
        self.raw["cells"][key] = c
        self.save()
        print(f"[cell] {label:18s} {domain:12s} seed {seed}: test {c['test_accuracy']:.2f} "
              f"val {c['val_accuracy']:.2f} {c['train_images_per_s']:.0f} img/s ({c['wall_s']:.0f}s)",
              file=sys.stderr, flush=True)

    def side(self, spec: str) -> None:
        s = parse_side(spec)
        if spec in self.raw["side"]:
            return
        arch = self.mode["methods"][0][1]
        home = self.home(arch, s["method"], s["seed"], tag=f"-lr{s['lr']:g}")
        c = self._train(home, s["label"], arch, s["method"], s["domain"], s["seed"], s["lr"])
        self.raw["side"][spec] = c
        self.save()
        print(f"[side] {s['label']:18s} {s['domain']:12s} seed {s['seed']}: test {c['test_accuracy']:.2f} "
              f"val {c['val_accuracy']:.2f} ({c['wall_s']:.0f}s)", file=sys.stderr, flush=True)

    def gate(self, placement: str, domain: str, seed: int) -> None:
        from mdl.workflows.common import open_version_data
        from mdl.workflows.gates import GateOptions, gated_network, train_gate
        from mdl.core.data import make_loader
        from mdl.core.training import DeviceSetup, accuracy
        from mdl.registry.store import Registry

        key = f"{placement}|{domain}|{seed}"
        if key in self.raw["gates"]:
            return
        arch = self.mode["methods"][0][1]
        reg = Registry.open(self.home(arch, "dw", seed))
        try:
            t0 = time.perf_counter()
            target = reg.domain_version(domain)
            assert target.method == "dw", target
            g = train_gate(reg, target, GateOptions(placement=placement, epochs=self.a.gate_epochs, lr=self.a.gate_lr,
                                                    batch_size=self.a.batch_size, device="cpu", workers=0, seed=seed))
            t_train = time.perf_counter() - t0
            net = gated_network(reg, g)
            dev = DeviceSetup.resolve("cpu")
            dev.prepare(net)
            test = make_loader(open_version_data(target), "test", 256, train=False)
            test_acc, _ = accuracy(net, test, dev, domain=domain, use_gate=True)
            gate_params = sum(p.numel() for p in net.gate_parameters(domain))
            wall = time.perf_counter() - t0
        finally:
            reg.close()
        self.raw["gates"][key] = {
            "placement": placement, "domain": domain, "seed": seed, "val_accuracy": g.accuracy,
            "base_val_accuracy": g.base_accuracy, "test_accuracy": test_acc,
            "base_test_accuracy": target.config["test_accuracy"], "gate_params": gate_params,
            "mixed": g.config["mixed_names"], "best_epoch": g.config["best_epoch"], "history": g.config["history"],
            "train_wall_s": round(t_train, 1), "wall_s": round(wall, 1)}
        self.save()
        print(f"[gate] {placement:6s} {domain:12s} seed {seed}: test {test_acc:.2f} (no gate "
              f"{target.config['test_accuracy']:.2f}) ({wall:.0f}s)", file=sys.stderr, flush=True)

    def group(self, label: str, seed: int, domains: list[str]) -> None:
        """One job over every target of a seed: the seed's parallel-adapter versions compressed together
        (mdl.workflows.compress), or every target trained jointly from the trunk (mdl.workflows.joint); its
        per-domain results are stored as ordinary cells of the row."""
        from mdl.registry.store import Registry

        key = f"{label}|{seed}"
        if key in self.raw["groups"]:
            return
        if label == "parallel-adapter-svd":
            src = self.home("resnet26", "parallel-adapter", seed)  # its cells are trained first (core rows)
            home = self.work / f"resnet26-parallel-adapter-svd-s{seed}"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(src, home, ignore=shutil.ignore_patterns("registry.lock", "runs"))
        else:
            home = self.work / f"resnet26-{label}-s{seed}"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(self.base_home("resnet26"), home, ignore=shutil.ignore_patterns("registry.lock", "runs"))
        reg = Registry.open(home)
        try:
            t0 = time.perf_counter()
            if label == "parallel-adapter-svd":
                from mdl.workflows.compress import compress

                res = compress(reg, domains, rank_ratio=self.a.rank_ratio,
                               opts=self.opts(self.a.svd_epochs, seed, lr=self.a.svd_lr))
                versions, info = res.versions, {"compression": res.report, "rows": res.rows}
            else:
                from mdl.workflows.joint import joint_train

                trunk, versions = joint_train(reg, [builtin(d, self.a.scale) for d in domains], names=domains,
                                              variant="bn" if label == "joint-bn" else "instance-norm",
                                              trunk="resnet26", opts=self.opts(self.a.epochs, seed))
                info = {"trunk": trunk.label, "trunk_params": trunk.num_params, "joint": trunk.config["joint"],
                        "history": trunk.config["history"], "train_images_per_s": trunk.config["train_images_per_s"]}
            wall = time.perf_counter() - t0
        finally:
            reg.close()
        for v in versions:
            self.raw["cells"][f"{label}|{v.name}|{seed}"] = {
                "method": label, "arch": v.trunk.arch, "domain": v.name, "seed": seed, "version": v.version,
                "val_accuracy": v.accuracy, "test_accuracy": v.config["test_accuracy"], "domain_params": v.domain_params,
                "num_classes": v.num_classes, "train_images": v.data["sizes"]["train"],
                "test_images": v.data["sizes"].get("test"), "best_epoch": v.config["best_epoch"],
                "history": v.config["history"] if label == "parallel-adapter-svd" else None,
                "train_images_per_s": None, "wall_s": round(wall / len(versions), 1)}
        self.raw["groups"][key] = {"label": label, "seed": seed, "wall_s": round(wall, 1), **info}
        self.save()
        print(f"[group] {label:18s} seed {seed}: " + ", ".join(
            f"{v.name} {v.config['test_accuracy']:.1f}" for v in versions) + f" ({wall:.0f}s)", file=sys.stderr, flush=True)

    def run(self, domains: list[str]) -> None:
        t_start = time.perf_counter()
        methods = [m for m in self.mode["methods"] if m[0] in self.a.methods]
        for arch in dict.fromkeys(m[1] for m in methods if m[0] not in GROUP):  # group rows start from resnet26's
            self.base_home(arch)
        core = [m for m in methods if m[0] not in OPTIONAL | GROUP]
        for seed in self.a.seeds:  # the paper's table first, then the side cells, the gates, the optional rows
            for label, arch, method in core:
                for d in domains:
                    self.cell(label, arch, method, d, seed)
        for seed in self.a.seeds:
            for label in [m[0] for m in methods if m[0] in GROUP]:
                self.group(label, seed, domains)
        for spec in self.a.side:
            self.side(spec)
        if "dw" in self.a.methods:
            for seed in self.a.seeds:
                for p in self.a.placements:
                    for d in domains:
                        self.gate(p, d, seed)
        for seed in self.a.seeds:
            for label, arch, method in [m for m in methods if m[0] in OPTIONAL]:
                for d in domains:
                    self.cell(label, arch, method, d, seed)
        t = self.raw["timing"]
        t["last_invocation_wall_s"] = round(time.perf_counter() - t_start, 1)
        t["cells_wall_s"] = round(sum(c["wall_s"] for c in self.raw["cells"].values()), 1)
        t["side_wall_s"] = round(sum(c["wall_s"] for c in self.raw["side"].values()), 1)
        t["gates_wall_s"] = round(sum(c["wall_s"] for c in self.raw["gates"].values()), 1)
        t["pretrain_wall_s"] = round(sum(c["wall_s"] for c in self.raw["pretrain"].values()), 1)
        t["groups_wall_s"] = round(sum(g["wall_s"] for g in self.raw.get("groups", {}).values()), 1)
        self.save()


# --------------------------------------------------------------------------------------------- report
def trunk_param_count(arch: str, width: float) -> int:
    """The trunk's learnable parameters without its classifier (= a classifier-only network's shared part)."""
    from mdl.core import create_network

    return create_network(arch, method="classifier-only", domains={}, width=width).parameter_counts()["shared"]


def param_totals(methods, width: float, classes: dict[str, int]) -> dict[str, dict]:
    """Parameters to serve all targets: the trunk without its classifier (which also serves the trunk's
    source) plus every target's own parameters (heads included), per method; computed from the networks."""
    from mdl.core import create_network

    out, trunks = {}, {}
    for label, arch, method in methods:
        if arch not in trunks:
            trunks[arch] = trunk_param_count(arch, width)
        net = create_network(arch, method=method, domains=classes, width=width)
        per = net.parameter_counts()["domains"]
        shared = 0
        if method == "parallel-adapter-svd":  # the shared factors beta: buffers, counted once for the group
            from mdl.core.compression import shared_factors

            shared = sum(b.numel() for b in shared_factors(net, next(iter(classes))).values())
        out[label] = {"trunk": trunks[arch] + shared, "per_domain": per, "total": trunks[arch] + shared + sum(per.values())}
        del net
    return out


def summarize(raw: dict, domains: list[str]) -> dict:
    from mdl.core.scoring import domain_score

    mode = MODES[raw["settings"].get("trunk_mode", "resnet26")]
    methods = mode["methods"]
    cells, seeds = raw["cells"], sorted({c["seed"] for c in raw["cells"].values()})
    labels = [m[0] for m in methods if any(c["method"] == m[0] for c in cells.values())]

    def acc(label, d, s, what="test_accuracy"):
        c = cells.get(f"{label}|{d}|{s}")
        return None if c is None else c[what]

    ref = {}
    for d in domains:
        vals = [acc(REFERENCE, d, s) for s in seeds if acc(REFERENCE, d, s) is not None]
        if vals:
            ref[d] = min(sum(vals) / len(vals), 99.9)  # a 100% reference would make every error score 0
    classes = {}
    for c in cells.values():
        classes[c["domain"]] = c["num_classes"]
    classes = {d: classes[d] for d in domains if d in classes}
    used = [m for m in methods if m[0] in labels]
    width = raw["settings"]["width"]
    bench_params = param_totals(used, width, classes)
    full_params = param_totals(used, 1.0, classes) if width != 1.0 else bench_params
    dw_total = bench_params["dw"]["total"] if "dw" in bench_params else float("nan")
    dw_full = full_params["dw"]["total"] if "dw" in full_params else float("nan")
    rows = {}
    for label in labels:
        complete = [s for s in seeds if all(acc(label, d, s) is not None for d in domains)]
        per_domain = {d: mean_spread([acc(label, d, s) for s in seeds if acc(label, d, s) is not None])
                      for d in domains}
        means = [sum(acc(label, d, s) for d in domains) / len(domains) for s in complete]
        scores = [sum(domain_score(acc(label, d, s), ref[d]) for d in domains) for s in complete] \
            if len(ref) == len(domains) else []
        recorded = {d: cells[f"{label}|{d}|{seeds[0]}"]["domain_params"] for d in domains
                    if f"{label}|{d}|{seeds[0]}" in cells}
        bp = bench_params[label]
        differ = {d: (n, bp["per_domain"][d]) for d, n in recorded.items() if bp["per_domain"][d] != n}
        if differ:  # e.g. JSON written by an earlier network design (its method rules owned other tensors)
            print(f"warning: {label}: own parameters recorded in the registry differ from the current network's "
                  f"(recorded, now): {differ}", file=sys.stderr)
        mine = [c for c in cells.values() if c["method"] == label]
        rows[label] = {
            "arch": next(m[1] for m in methods if m[0] == label), "seeds": complete,
            "per_domain": per_domain, "mean": mean_spread(means), "score": mean_spread(scores),
            "mean_per_seed": means, "score_per_seed": scores,
            "params_ratio": bp["total"] / dw_total,
            "params_ratio_full_width": full_params[label]["total"] / dw_full,
            "params_total": bp["total"], "params_total_full_width": full_params[label]["total"],
            "trunk_params": bp["trunk"],
            "per_domain_params": bp["per_domain"],
            "recorded_params_differ": differ,
            "per_domain_params_mean": sum(bp["per_domain"].values()) / len(classes),
            "per_domain_params_mean_full_width": sum(full_params[label]["per_domain"].values()) / len(classes),
            "own_over_trunk": sum(bp["per_domain"].values()) / len(classes) / bp["trunk"],
            # images/s over all this row's training: sum of images / sum of training time (validation excluded)
            "train_images_per_s": _images_per_s(mine),
            "train_s": sum(c["wall_s"] for c in mine),
        }
    gates = {}
    gcells = raw.get("gates", {})
    for p in PLACEMENTS:
        got = [g for g in gcells.values() if g["placement"] == p]
        if not got:
            continue
        gseeds = sorted({g["seed"] for g in got})
        complete = [s for s in gseeds if all(f"{p}|{d}|{s}" in gcells for d in domains)]
        per_domain = {d: mean_spread([gcells[f"{p}|{d}|{s}"]["test_accuracy"] for s in gseeds if f"{p}|{d}|{s}" in gcells])
                      for d in domains}
        means = [sum(gcells[f"{p}|{d}|{s}"]["test_accuracy"] for d in domains) / len(domains) for s in complete]
        base = [sum(gcells[f"{p}|{d}|{s}"]["base_test_accuracy"] for d in domains) / len(domains) for s in complete]
        deltas = [m - b for m, b in zip(means, base)]
        scores = [sum(domain_score(gcells[f"{p}|{d}|{s}"]["test_accuracy"], ref[d]) for d in domains)
                  for s in complete] if len(ref) == len(domains) else []
        gates[p] = {"seeds": complete, "per_domain": per_domain, "mean": mean_spread(means),
                    "delta_vs_dw": mean_spread(deltas), "score": mean_spread(scores),
                    "per_domain_delta": {d: mean_spread([gcells[f"{p}|{d}|{s}"]["test_accuracy"]
                                                         - gcells[f"{p}|{d}|{s}"]["base_test_accuracy"]
                                                         for s in complete]) for d in domains},
                    "gate_params_mean": sum(gcells[f"{p}|{d}|{complete[0]}"]["gate_params"] for d in domains)
                    / len(domains) if complete else None,
                    "mixed": got[0]["mixed"]}
    return {"domains": domains, "seeds": seeds, "reference": {d: round(v, 3) for d, v in ref.items()},
            "rows": rows, "gates": gates}


def _images_per_s(cells: list[dict]) -> float:
    imgs = [c["train_images"] * len(c.get("history") or [None]) for c in cells if c.get("train_images_per_s")]
    secs = [n / c["train_images_per_s"] for n, c in zip(imgs, [c for c in cells if c.get("train_images_per_s")])]
    return sum(imgs) / sum(secs) if secs else float("nan")


def fmt(ms, digits=1):
    m, s = ms
    if m != m:  # nan
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _k(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def markdown(raw: dict, summ: dict) -> str:
    from mdl.core.data.transforms import default_crop
    from mdl.core.recipes import Recipe

    cfg, domains = raw["settings"], summ["domains"]
    lite0 = cfg.get("trunk_mode") == "lite0"
    if lite0:
        pre = next(iter(raw.get("pretrain", {}).values()), {})
        head = [f"Settings: trunk {LITE0} (ImageNet weights imported offline, no pretraining here; trunk "
                f"{pre.get('trunk_params', 0):,} parameters without its classifier), images resized to "
                f"{cfg['image_size']} px (crop {default_crop(cfg['image_size'])}), {cfg['epochs']} epochs per (method, domain), "
                f"batch {cfg['batch_size']}, lr {cfg['lr']} (warm-up through epoch 1"
                + "".join(f", x0.1 after epoch {m}" for m in Recipe(epochs=cfg["epochs"]).milestones()) + f"), gates {cfg['gate_epochs']} epoch(s) at lr {cfg['gate_lr']}, "
                f"targets `builtin:NAME?scale={cfg['target_scale']:g}`, CPU, seeds "
                f"{', '.join(map(str, summ['seeds']))}; test-split top-1 accuracy (%), mean ± half-range over seeds."]
    else:
        head = [f"Settings: width {cfg['width']}, {cfg['image_size']} px (crop {default_crop(cfg['image_size'])}), "
                f"pretrain {cfg['pretrain_epochs']} epochs (seed 0), {cfg['epochs']} epochs per (method, domain), "
                f"gates {cfg['gate_epochs']} epochs, batch {cfg['batch_size']} (pretraining {cfg['pretrain_batch_size']}), "
                f"lr {cfg['lr']}, builtin scale: source {cfg['source_scale']:g}, targets {cfg['target_scale']:g}, seeds "
                f"{', '.join(map(str, summ['seeds']))}; test-split top-1 accuracy (%), mean ± half-range over seeds."]
    ref_arch = next((r["arch"] for lab, r in summ["rows"].items() if lab == REFERENCE), "")
    lines = head + [f"Score reference per domain = seed-mean `{REFERENCE}` ({ref_arch}) test accuracy: "
                    + ", ".join(f"{d} {v:.1f}" for d, v in summ["reference"].items()) + ".", ""]
    if lite0:
        lines += ["| method | own params/domain (mean) | own / trunk | total #params (vs dw) | "
                  + " | ".join(domains) + " | mean | score | train img/s |",
                  "|---|---|---|---|" + "---|" * len(domains) + "---|---|---|"]
        for label, r in summ["rows"].items():
            lines.append(f"| {label} | {_k(r['per_domain_params_mean'])} | {100 * r['own_over_trunk']:.1f}% | "
                         f"{_k(r['params_total'])} ({r['params_ratio']:.2f}) | "
                         + " | ".join(fmt(r["per_domain"][d]) for d in domains)
                         + f" | **{fmt(r['mean'])}** | {fmt(r['score'], 0)} | {r['train_images_per_s']:.0f} |")
        lines += ["", "own params = the domain's own learnable parameters (head included), mean over the targets; "
                  "total = trunk without its ImageNet classifier + every target's own parameters, relative to `dw`; "
                  "train img/s = training images / training time of the row's cells (validation excluded), "
                  "from the registry's `train_images_per_s`.", ""]
    else:
        lines += ["| method | trunk | #params (vs dw) | #params full width (vs dw) | "
                  + " | ".join(domains) + " | mean | score |",
                  "|---|---|---|---|" + "---|" * len(domains) + "---|---|"]
        for label, r in summ["rows"].items():
            lines.append(f"| {label} | {r['arch']} | {r['params_ratio']:.2f} | {r['params_ratio_full_width']:.2f} | "
                         + " | ".join(fmt(r["per_domain"][d]) for d in domains)
                         + f" | **{fmt(r['mean'])}** | {fmt(r['score'], 0)} |")
        lines += ["", "#params = trunk (which also serves the source) + every target's own parameters (heads included), "
                  "relative to `dw`; the full-width column is the same count for the published widths (1.0).", ""]
    lines += group_section(raw, summ)
    side = raw.get("side", {})
    if side:
        lines += ["Side cells (not in the rows above):", "",
                  "| cell | domain | seed | lr | test | val | best epoch | row's value at lr " f"{cfg['lr']} (same seed) |",
                  "|---|---|---|---|---|---|---|---|"]
        for spec, c in side.items():
            s = parse_side(spec)
            base = raw["cells"].get(f"{s['method']}|{c['domain']}|{c['seed']}")
            lines.append(f"| {c['method']} | {c['domain']} | {c['seed']} | {c['lr']} | {c['test_accuracy']:.1f} | "
                         f"{c['val_accuracy']:.1f} | {c['best_epoch']} | "
                         + (f"test {base['test_accuracy']:.1f}, val {base['val_accuracy']:.1f}" if base else "–") + " |")
        lines.append("")
    if summ["gates"]:
        base = summ["rows"].get("dw")
        mixed = next(iter(summ["gates"].values())).get("mixed") or []
        lines += ["Soft-sharing gates (paper Table 3) on the `dw` adapters of the same seed, mixing all "
                  f"{len(mixed) or len(domains) + 1} registered `dw` domains ({', '.join(mixed) or 'source included'}):", "",
                  "| gate placement | gate params/domain | " + " | ".join(domains) + " | mean | Δ mean vs no gate | score |",
                  "|---|---|" + "---|" * len(domains) + "---|---|---|"]
        if base:
            lines.append("| none (`dw`) | 0 | " + " | ".join(fmt(base["per_domain"][d]) for d in domains)
                         + f" | **{fmt(base['mean'])}** | – | {fmt(base['score'], 0)} |")
        for p, g in summ["gates"].items():
            lines.append(f"| {p} | {g['gate_params_mean']:.0f} | " + " | ".join(fmt(g["per_domain"][d]) for d in domains)
                         + f" | **{fmt(g['mean'])}** | {g['delta_vs_dw'][0]:+.2f} ± {g['delta_vs_dw'][1]:.2f} | "
                         f"{fmt(g['score'], 0)} |")
    pre = raw.get("pretrain", {})
    if pre and not lite0:
        lines += ["", "Pretraining on `source` (100 classes): " + "; ".join(
            f"{arch}: test {p['test_accuracy']:.1f}%, trunk {p['trunk_params']:,} params, {p['wall_s']:.0f} s"
            for arch, p in pre.items()) + "."]
    elif pre:
        lines += ["", "Trunk import: " + "; ".join(
            f"{arch}: {p['trunk_params']:,} params, source domain `{p['source']}` ({p['source_method']}), {p['wall_s']:.0f} s"
            for arch, p in pre.items()) + "."]
    t = raw.get("timing", {})
    if t:
        lines += [f"Wall time (sum over cells): {'import' if lite0 else 'pretraining'} {t.get('pretrain_wall_s', 0):.0f} s, "
                  f"methods {t.get('cells_wall_s', 0):.0f} s, side cells {t.get('side_wall_s', 0):.0f} s, "
                  f"gates {t.get('gates_wall_s', 0):.0f} s; last invocation {t.get('last_invocation_wall_s', 0):.0f} s."]
    return "\n".join(lines) + "\n"


BASE_OF = {"parallel-adapter-svd": "parallel-adapter", "joint-bn": "bn", "joint-in": "bn"}


def group_section(raw: dict, summ: dict) -> list[str]:
    """Compression and joint training against the row each one changes (absolute parameter counts)."""
    rows, groups = summ["rows"], raw.get("groups", {})
    labels = [lab for lab in rows if lab in GROUP]
    if not labels:
        return []
    cfg = raw["settings"]
    lines = [("Compression (Rebuffi et al. 2018 §3.4) and joint training (Bilen & Vedaldi 2017), each against the "
              "row it changes (test accuracy, mean over the targets; parameters: everything needed to serve the "
              f"{len(summ['domains'])} targets, trunk included):"), "",
             "| row | vs | own params/domain | shared beyond the trunk | total | total of `vs` | mean | mean of `vs` | Δ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lab in labels:
        r, base = rows[lab], rows.get(BASE_OF[lab])
        trunk_extra = r["trunk_params"] - (base["trunk_params"] if base else r["trunk_params"])
        lines.append(f"| {lab} | {BASE_OF[lab]} | {_k(r['per_domain_params_mean'])} | "
                     + (f"{trunk_extra:,} (beta)" if lab == "parallel-adapter-svd" else
                        "0 (a new trunk of the same size)") + f" | {_k(r['params_total'])} | "
                     + (f"{_k(base['params_total'])} | " if base else "– | ") + f"**{fmt(r['mean'])}** | "
                     + (f"{fmt(base['mean'])} | {r['mean'][0] - base['mean'][0]:+.1f} |" if base else "– | – |"))
    lines.append("")
    svd = [g for g in groups.values() if g["label"] == "parallel-adapter-svd"]
    if svd:
        c = svd[0]["compression"]
        before = [sum(x["accuracy_compressed"] for x in g["rows"]) / len(g["rows"]) for g in svd]
        unc = [sum(x["accuracy_uncompressed"] for x in g["rows"]) / len(g["rows"]) for g in svd]
        after = [sum(x["accuracy"] for x in g["rows"]) / len(g["rows"]) for g in svd]
        lines += [(f"parallel-adapter-svd: rank ratio {c['rank_ratio']:g} (K = C_in/2 per layer), "
                  f"{cfg.get('svd_epochs')} fine-tuning epoch(s) of gamma + norms + head at lr {cfg.get('svd_lr')}. "
                  f"Adapters per domain {c['adapter_params_per_domain']:,} -> own gamma "
                  f"{next(iter(c['gamma_params'].values())):,} ({100 * c['own_fraction']:.1f}%), shared beta "
                  f"{c['beta_params']:,} once ({100 * c['own_plus_beta_fraction']:.1f}% if one domain carried a whole beta); "
                  f"the group's adapters {100 * c['group_fraction']:.1f}% of the uncompressed ones. Validation accuracy "
                  f"(mean over targets, per seed): uncompressed {', '.join(f'{x:.1f}' for x in unc)}; "
                  f"compressed before fine-tuning {', '.join(f'{x:.1f}' for x in before)}; after "
                  f"{', '.join(f'{x:.1f}' for x in after)}."), ""]
    joint = [g for g in groups.values() if g["label"] in ("joint-bn", "joint-in")]
    if joint:
        j = joint[0]["joint"]
        lines += [f"Joint rows: {cfg.get('joint_epochs')} epochs of {j['rounds_per_epoch']} round-robin rounds "
                  f"(one batch of each target in turn, one SGD step per batch) at lr {cfg.get('joint_lr')}, the whole "
                  "trunk trained with the per-domain parts, from the pretrained resnet26; each registers a new trunk. "
                  "Wall time per seed: " + ", ".join(f"{g['label']} s{g['seed']} {g['wall_s']:.0f} s" for g in joint)
                  + ".", ""]
    return lines


def charts(summ: dict, out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    domains, rows = summ["domains"], summ["rows"]
    labels = list(rows)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [2.3, 1]})
    x = np.arange(len(domains) + 1)
    w = 0.8 / max(len(labels), 1)
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        r = rows[label]
        ms = [r["per_domain"][d] for d in domains] + [tuple(r["mean"])]
        ax.bar(x + (i - (len(labels) - 1) / 2) * w, [m for m, _ in ms], w, yerr=[s for _, s in ms],
               label=label, color=cmap(i % 10), capsize=1.5, error_kw={"lw": 0.8})
    ax.set_xticks(x, domains + ["mean"], rotation=20)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-domain test accuracy (mean ± half-range over seeds {summ['seeds']})")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.grid(axis="y", alpha=0.3)
    for i, label in enumerate(labels):
        r = rows[label]
        if r["score"][0] == r["score"][0]:
            ax2.errorbar(r["params_ratio"], r["score"][0], yerr=r["score"][1], fmt="o", color=cmap(i % 10), capsize=3)
            ax2.annotate(label, (r["params_ratio"], r["score"][0]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_xticks([0.5, 1, 2, 4, 8], ["0.5", "1", "2", "4", "8"])
    ax2.set_xlabel("#params for all targets (trunk included), relative to dw (log)")
    ax2.set_ylabel(f"decathlon-style score (reference = {REFERENCE})")
    ax2.set_title("Score vs parameters")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)

    if summ["gates"]:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        ps = list(summ["gates"])
        for j, d in enumerate(domains):
            ax.scatter(np.arange(len(ps)) + (j - len(domains) / 2) * 0.05,
                       [summ["gates"][p]["per_domain_delta"][d][0] for p in ps], s=14, color=cmap(j % 10), label=d)
        ax.bar(np.arange(len(ps)), [summ["gates"][p]["delta_vs_dw"][0] for p in ps], 0.6,
               yerr=[summ["gates"][p]["delta_vs_dw"][1] for p in ps], color="lightgrey", edgecolor="k",
               capsize=4, zorder=0, label="mean over domains")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(ps)), ps)
        ax.set_xlabel("gate placement")
        ax.set_ylabel("test accuracy gain over dw without gate (points)")
        ax.set_title("Soft-sharing gates (Table 3): gain per domain (dots) and mean (bar, ± half-range over seeds)")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / (stem.replace("compare_methods", "compare_gates") + ".png"), dpi=110)
        plt.close(fig)


def report(raw: dict, domains: list[str], out: Path, stem: str) -> None:
    summ = summarize(raw, domains)
    raw["summary"] = summ
    write_json(out / f"{stem}.json", raw)
    (out / f"{stem}.md").write_text(markdown(raw, summ))
    charts(summ, out, stem)
    print(markdown(raw, summ))


def main(argv=None):
    show_progress()
    a = parse_args(argv)
    from mdl.core.data import list_builtin

    stem = MODES[a.trunk]["stem"]
    domains = a.domains or [d for d in list_builtin() if d != SOURCE]
    a.out.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        raw = json.loads((a.out / f"{stem}.json").read_text())
        report(raw, raw.get("summary", {}).get("domains") or domains, a.out, stem)
        return
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    os.environ.pop("MDL_BUILTIN_SCALE", None)  # every source names its scale (builtin:NAME?scale=S)
    runner = Runner(a)
    runner.raw["command"] = "python bench/compare_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runner.run(domains)
    report(runner.raw, domains, a.out, stem)


if __name__ == "__main__":
    main()
