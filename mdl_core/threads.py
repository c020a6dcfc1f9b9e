"""Fair-share CPU threads for mdl jobs that share a machine.

Measured on 2 cores (bench/threads.py): two jobs with torch's defaults (every core each) collapse to
~20% of a lone job's img/s each, because their OpenMP threads wait for cores the other job holds;
OMP_WAIT_POLICY=PASSIVE avoids the collapse but costs a lone job 30%; one thread per job keeps each at
~60%. So a job registers itself (a pid file in a per-user runtime folder) and uses
max(1, cores // live mdl jobs) threads, re-counted at most every ``INTERVAL`` seconds from the loops that
run the steps (`rebalance()`), so a job that was alone shrinks when a second one starts and grows back
when it ends. A lone job keeps every core and torch's defaults. ``--threads N`` pins the count.
Under torchrun every rank is a job: N ranks on a machine share its cores (at least LOCAL_WORLD_SIZE ways).
Jobs other than mdl's are not seen: pin ``--threads`` when the machine is busy with them.
"""
from __future__ import annotations

import atexit
import os
import sys
import tempfile
import time
from pathlib import Path

INTERVAL = 2.0  # seconds between re-counts of the live jobs
_state: dict = {"file": None, "pinned": None, "last": 0.0}


def jobs_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"mdl-jobs-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    return Path(os.environ.get("MDL_RUNTIME_DIR") or default)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_jobs() -> int:
    """How many registered mdl jobs are running (stale pid files of killed jobs are removed)."""
    n = 0
    for f in jobs_dir().glob("*.pid"):
        try:
            pid = int(f.stem)
        except ValueError:
            continue
        if _alive(pid):
            n += 1
        else:
            f.unlink(missing_ok=True)
    return max(n, 1)


def local_ranks() -> int:
    """The processes torchrun starts on this machine (LOCAL_WORLD_SIZE), 1 outside torchrun. Each rank is
    an mdl job with its own pid file too; counting them up front keeps a rank that starts before its
    peers registered from taking every core (torchrun's own OMP_NUM_THREADS=1 is replaced by the share)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def fair_share(cores: int, jobs: int) -> int:
    return max(1, cores // max(jobs, 1))


def _set(n: int) -> None:
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    elif n != (os.cpu_count() or 1):  # torch reads it when its thread pool starts; alone, torch's default stands
        os.environ["OMP_NUM_THREADS"] = str(n)


def start(pinned: int | None = None) -> int:
    """Register this process as an mdl job and set its thread count; returns the count."""
    if pinned:
        _state["pinned"] = int(pinned)
        _set(int(pinned))
        return int(pinned)
    if _state["file"] is None:
        try:
            jobs_dir().mkdir(parents=True, exist_ok=True)
            f = jobs_dir() / f"{os.getpid()}.pid"
            f.touch()
            _state["file"] = f
            atexit.register(stop)
        except OSError:  # no writable runtime folder: behave as a lone job
            return os.cpu_count() or 1
    return rebalance(force=True)


def stop() -> None:
    f = _state["file"]
    if f is not None:
        f.unlink(missing_ok=True)
        _state["file"] = None


def rebalance(force: bool = False) -> int | None:
    """Re-count the live jobs (at most every INTERVAL s) and take this job's fair share of the cores."""
    if _state["pinned"] or _state["file"] is None:
        return _state["pinned"]
    now = time.monotonic()
    if not force and now - _state["last"] < INTERVAL:
        return None
    _state["last"] = now
    n = fair_share(os.cpu_count() or 1, max(live_jobs(), local_ranks()))
    _set(n)
    return n
