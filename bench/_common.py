"""Helpers shared by the bench scripts: machine description, JSON output, timing."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from mdl.files import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def show_progress() -> None:
    """The workflows' notes and progress bars on stderr, as the CLI shows them (a workflow is silent
    unless its caller picks a reporter)."""
    from mdl.workflows import events

    events.set_reporter(events.RichReporter())


# glibc's allocator, as it runs by default, hands freed large buffers back to the system and takes fresh
# pages (page faults) at the next forward, by an amount that changes from process to process: a
# one-domain Lite0 batch of 100 at 64 px took 94 to 142 ms in five fresh processes on the 2-core Xeon
# (2026-12-02), and 78 to 84 ms with STEADY_MALLOC, which keeps freed memory in the process (as jemalloc
# and tcmalloc do). Benchmarks that compare two paths can run under both (see bench/mixed_batch.py).
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
MALLOC_REGIMES = ("steady", "default")


def malloc_regime() -> str:
    """'steady' when this process started with STEADY_MALLOC, else 'default' (the variables only act at
    process start: glibc reads them once)."""
    return "steady" if all(os.environ.get(k) == v for k, v in STEADY_MALLOC.items()) else "default"


def malloc_env(regime: str) -> dict:
    """The environment for a child process in ``regime``."""
    env = {k: v for k, v in os.environ.items() if k not in STEADY_MALLOC}
    return {**env, **STEADY_MALLOC} if regime == "steady" else env


def machine() -> dict:
    import torch

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {"cpu": model, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "malloc": malloc_regime()}
    return info


def write_json(path: Path, obj) -> None:
    """Atomic write (a killed run never leaves a half-written results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def median_time(fns, repeats: int, warmup: int = 2, sync=None) -> list[float]:
    """Median seconds per call of each fn; interleaved round by round so that load from other
    processes on a shared machine hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    if sync:
        sync()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            if sync:
                sync()
            ts[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in ts]


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half-range ((max - min) / 2) over seeds."""
    if not values:
        return float("nan"), float("nan")
    return sum(values) / len(values), (max(values) - min(values)) / 2
