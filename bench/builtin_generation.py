"""Time to generate every builtin domain from scratch (wall and CPU seconds), into a fresh cache.

    PYTHONPATH=. python bench/builtin_generation.py   -> bench/results/builtin_generation.json"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import os  # noqa: E402

from mdl.core.data.builtin import list_builtin, load_builtin  # noqa: E402


def main():
    rows, total_wall, total_cpu = [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as d:
        os.environ["MDL_CACHE"] = d
        os.environ.pop("MDL_BUILTIN_SCALE", None)
        for name in list_builtin():
            c0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
            data = load_builtin(name)
            wall, cpu = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_utime - c0
            total_wall += wall
            total_cpu += cpu
            sizes = [int((data["split"] == k).sum()) for k in range(3)]
            rows.append({"name": name, "classes": len(data["classes"]), "train": sizes[0], "val": sizes[1],
                         "test": sizes[2], "flip": data["flip"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
            print(json.dumps(rows[-1]), flush=True)
    res = {"domains": rows, "total_wall_s": round(total_wall, 1), "total_cpu_s": round(total_cpu, 1),
           "note": "single process on a shared 2-core machine; cpu_s is this process's user time"}
    out = Path(__file__).parent / "results" / "builtin_generation.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "domains"}))


if __name__ == "__main__":
    main()
