"""joint-train's recipe on the ImageNet Lite0 trunk (issue 17: "check joint-train's defaults on the
pretrained trunk the same way"): the paper's recipe at the command's default lr (SGD 0.01, step decays,
the domains' batch statistics) against the transfer recipe add-domain uses on this trunk (SGD 0.003,
cosine, the norms keep ImageNet's statistics). Each cell is a real `joint_train` run (variant bn: the
shared trunk trains too, each domain owns its norms and head) on builtin digits + textures at full size,
3 epochs, seed 0; chosen by mean validation accuracy, test reported.

    PYTHONPATH=. python bench/joint_recipe.py      # ~4 min on 2 cores -> bench/results/joint_recipe.{json,md}
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, show_progress, write_json  # noqa: E402

SOURCES = ["builtin:digits", "builtin:textures"]
CELLS = {"paper (joint-train's default: lr 0.01, step, batch statistics)": {"recipe": "mdl", "lr": 0.01},
         "transfer (lr 0.003, cosine, statistics kept)": {"recipe": "transfer", "lr": None}}


def run(label: str, fields: dict, base: Path) -> dict:
    from mdl.workflows.joint import joint_train
    from mdl.workflows.train import TrainOptions
    from mdl.workflows.trunks import import_trunk
    from mdl.registry.store import Registry

    reg, _ = Registry.init(base / label.split()[0])
    import_trunk(reg, arch="timm/tf_efficientnet_lite0")
    t0 = time.perf_counter()
    _, versions = joint_train(reg, SOURCES, names=None, variant="bn", trunk=None,
                              opts=TrainOptions(epochs=3, device="cpu", seed=0, **fields))
    return {"cell": label, **fields, "wall_s": round(time.perf_counter() - t0, 1),
            "val": {v.name: v.accuracy for v in versions}, "test": {v.name: v.config["test_accuracy"] for v in versions},
            "val_mean": sum(v.accuracy for v in versions) / len(versions),
            "test_mean": sum(v.config["test_accuracy"] for v in versions) / len(versions),
            "best_epoch": versions[0].config["best_epoch"]}


def main() -> None:
    show_progress()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(label, fields, Path(tmp)) for label, fields in CELLS.items()]
    res = {"machine": machine(), "sources": SOURCES, "rows": rows}
    write_json(RESULTS / "joint_recipe.json", res)
    lines = ["# joint-train's recipe on ImageNet Lite0 (`bench/joint_recipe.py`)", "",
             f"Variant bn, {' + '.join(SOURCES)} at full size, 3 epochs, seed 0, CPU.", "",
             "| recipe | val % (" + " / ".join(r.split(':')[1] for r in SOURCES) + ") | val mean | test % | test mean | best epoch |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {' / '.join(f'{a:.2f}' for a in r['val'].values())} | {r['val_mean']:.2f} | "
                     f"{' / '.join(f'{a:.2f}' for a in r['test'].values())} | {r['test_mean']:.2f} | {r['best_epoch']} |")
    (RESULTS / "joint_recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
