"""Thread policy (issue 11 §1): a lone job keeps every core, concurrent mdl jobs share them, a pinned
count wins, killed jobs stop counting, and the CLI option reaches torch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mdl.core import threads


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("MDL_RUNTIME_DIR", str(tmp_path / "jobs"))
    monkeypatch.setattr(threads, "_state", {"file": None, "pinned": None, "last": 0.0})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    yield tmp_path / "jobs"
    threads.stop()
    torch.set_num_threads(before)


def test_fair_share_arithmetic():
    assert [threads.fair_share(4, n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert threads.fair_share(2, 0) == 2


def test_lone_job_keeps_every_core_and_shrinks_when_another_starts(runtime):
    assert threads.start() == 4 and torch.get_num_threads() == 4
    assert (runtime / f"{os.getpid()}.pid").is_file()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (runtime / f"{other.pid}.pid").touch()  # a second live mdl job
        assert threads.rebalance() is None  # rate-limited: nothing re-counted within INTERVAL
        assert threads.rebalance(force=True) == 2 and torch.get_num_threads() == 2
    finally:
        other.kill()
        other.wait()
    assert threads.rebalance(force=True) == 4  # the killed job's pid file no longer counts ...
    assert not (runtime / f"{other.pid}.pid").exists()  # ... and is removed
    threads.stop()
    assert not (runtime / f"{os.getpid()}.pid").exists()


def test_pinned_threads_win(runtime):
    (runtime).mkdir(parents=True)
    assert threads.start(1) == 1 and torch.get_num_threads() == 1
    assert threads.rebalance(force=True) == 1


def test_cli_threads_option_and_env_reach_torch(mdl, home, runtime, monkeypatch):
    monkeypatch.setenv("MDL_BUILTIN_SCALE", "0.03")
    result = mdl("data", "inspect", "builtin:digits", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    assert torch.get_num_threads() == 1
    bad = mdl("data", "inspect", "builtin:digits", "--threads", "0")
    assert bad.code == 2 and "--threads" in bad.stderr
