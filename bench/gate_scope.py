"""Soft-sharing gate scopes on the ImageNet Lite0 trunk: the paper's text (`gate`: only the gate MLPs
train, every norm frozen) against the released main_sharing.py (`gate+domain`: the target's norms with
batch statistics, last pointwise conv and head train with the gate, registered as a new version).

It uses the `dw` registries of bench/compare_methods.py (same settings: 4 builtin targets at scale 0.25,
72 px, 3 epochs at lr 0.01; it trains any that are missing), copies one per (seed, scope, target) so
runs never see each other's versions, and trains a `late` gate for 1 epoch at lr 0.1 (compare_methods'
gate settings) in each scope. Reported per target and seed: validation and test accuracy without and
with the gate; for `gate+domain` also the new version's own (ungated) accuracy.

    PYTHONPATH=. python bench/gate_scope.py              # ~10 min on 2 quiet cores (more if dw cells are missing)
    PYTHONPATH=. python bench/gate_scope.py --report-only

Outputs: bench/results/gate_scope_lite0.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, mean_spread, show_progress, write_json  # noqa: E402
from bench.compare_methods import LITE0, Runner, parse_args  # noqa: E402

SCOPES = ("gate", "gate+domain")


def upgraded(home: Path) -> Path:
    """Registries made by an older mdl (schema revision) are upgraded in place (bench homes only)."""
    from mdl.registry.store import Registry

    if (home / "registry.db").is_file():
        Registry.upgrade(home)
    return home


def dw_home(runner: Runner, domain: str, seed: int) -> Path:
    from mdl.registry.errors import NotFound
    from mdl.registry.store import Registry

    upgraded(runner.work / f"base-{LITE0.replace('/', '_')}")
    home = upgraded(runner.home(LITE0, "dw", seed))
    reg = Registry.open(home)
    try:
        try:
            v = reg.domain_version(domain)
            missing = v.method != "dw"
        except NotFound:
            missing = True
    finally:
        reg.close()
    if missing:
        runner.raw["cells"].pop(f"dw|{domain}|{seed}", None)
        runner.cell("dw", LITE0, "dw", domain, seed)
    return home


def run_gate(base: Path, work: Path, domain: str, seed: int, scope: str, a) -> dict:
    from mdl.workflows.common import open_version_data
    from mdl.workflows.gates import GateOptions, gated_network, train_gate
    from mdl.core.data import make_loader
    from mdl.core.training import DeviceSetup, accuracy
    from mdl.registry.store import Registry

    home = work / f"{scope.replace('+', '_')}-s{seed}-{domain}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(base, home, ignore=shutil.ignore_patterns("registry.lock", "runs"))
    reg = Registry.open(home)
    try:
        target = reg.domain_version(domain)
        t0 = time.perf_counter()
        g = train_gate(reg, target, GateOptions(placement="late", epochs=a.gate_epochs, lr=a.gate_lr,
                                                batch_size=a.batch_size, device="cpu", workers=0, seed=seed,
                                                scope=scope))
        wall = time.perf_counter() - t0
        dev = DeviceSetup.resolve("cpu")
        test = make_loader(open_version_data(target), "test", 256, train=False)
        net = gated_network(reg, g)
        dev.prepare(net)
        with_gate, _ = accuracy(net, test, dev, domain=domain, use_gate=True)
        own, _ = accuracy(net, test, dev, domain=domain, use_gate=False)  # the gate's target version, ungated
    finally:
        reg.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"domain": domain, "seed": seed, "scope": scope, "target_version": g.target.version,
            "new_version": g.target.version != target.version, "val_without": target.accuracy,
            "val_with_gate": g.accuracy, "val_version_ungated": g.base_accuracy,
            "test_without": target.config["test_accuracy"], "test_with_gate": with_gate, "test_version_ungated": own,
            "best_epoch": g.config["best_epoch"], "wall_s": round(wall, 1)}


def markdown(raw: dict) -> str:
    rows = raw["runs"]
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    lines = ["| target | scope | test without gate | test with gate | gain | new version's own test acc |",
             "|---|---|---|---|---|---|"]
    for d in domains:
        for scope in SCOPES:
            rs = [r for r in rows if r["domain"] == d and r["scope"] == scope]
            if not rs:
                continue
            wo = mean_spread([r["test_without"] for r in rs])
            w = mean_spread([r["test_with_gate"] for r in rs])
            gain = mean_spread([r["test_with_gate"] - r["test_without"] for r in rs])
            own = mean_spread([r["test_version_ungated"] for r in rs]) if scope != "gate" else None
            lines.append(f"| {d} | {scope} | {wo[0]:.1f} ± {wo[1]:.1f} | {w[0]:.1f} ± {w[1]:.1f} | "
                         f"{gain[0]:+.1f} ± {gain[1]:.1f} | " + (f"{own[0]:.1f} ± {own[1]:.1f}" if own else "-") + " |")
    for scope in SCOPES:
        rs = [r for r in rows if r["scope"] == scope]
        if rs:
            gain = mean_spread([r["test_with_gate"] - r["test_without"] for r in rs])
            lines.append(f"| **mean over targets** | {scope} | | | {gain[0]:+.1f} ± {gain[1]:.1f} | |")
    seeds = sorted({r["seed"] for r in rows})
    return ("\n".join(lines) + f"\n\nTest accuracy (%), mean ± half-range over seeds {seeds}; `late` gate, "
            f"{raw['settings']['gate_epochs']} epoch(s) at lr {raw['settings']['gate_lr']}.\n")


def main(argv=None) -> None:
    show_progress()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mdl-bench-compare")
    b = ap.parse_args(argv)
    raw_path = b.out / "gate_scope_lite0.json"
    if not b.report_only:
        a = parse_args(["--trunk", "lite0", "--work", str(b.work), "--seeds", *map(str, b.seeds)])
        runner = Runner(a)
        raw = {"settings": {"compare_methods": runner.cfg, "gate_epochs": a.gate_epochs, "gate_lr": a.gate_lr,
                            "placement": "late", "seeds": b.seeds}, "runs": []}
        t0 = time.perf_counter()
        for seed in b.seeds:
            for d in a.domains:
                base = dw_home(runner, d, seed)
                for scope in SCOPES:
                    r = run_gate(base, runner.work / "gate-scope", d, seed, scope, a)
                    raw["runs"].append(r)
                    print(f"[gate] {scope:12s} {d:12s} seed {seed}: test {r['test_without']:.1f} -> "
                          f"{r['test_with_gate']:.1f} (own {r['test_version_ungated']:.1f}) {r['wall_s']:.0f}s",
                          file=sys.stderr, flush=True)
        raw["wall_s"] = round(time.perf_counter() - t0, 1)
        raw["machine"] = machine()
        write_json(raw_path, raw)
    import json

    raw = json.loads(raw_path.read_text())
    (b.out / "gate_scope_lite0.md").write_text(markdown(raw))
    print(markdown(raw))


if __name__ == "__main__":
    main()
