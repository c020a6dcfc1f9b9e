"""Shared fixtures: an isolated registry home, a way to run the real `mdl` process, tiny tensors."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_mdl(*args: str, home: Path | None = None, env: dict | None = None, timeout: int = 600) -> Result:
    """Run `python -m mdl ARGS` as a real process (real exit code, separate stdout/stderr)."""
    full_env = {**os.environ, "MDL_DEBUG": "0", "COLUMNS": "200", **(env or {})}
    cmd = [sys.executable, "-m", "mdl", *args]
    if home is not None:
        cmd += ["--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def invoke(*args: str, home: Path | None = None, env: dict | None = None) -> Result:
    """Run the `mdl` entry point in this process (no interpreter start-up): same exit codes and streams."""
    import contextlib
    import io

    from mdl.cli.app import main

    argv = ["mdl", *args] + (["--home", str(home)] if home is not None else [])
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    os.environ.update({"MDL_DEBUG": "0", "COLUMNS": "200", **(env or {})})
    old_argv, sys.argv = sys.argv, argv
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def mdl():
    return invoke


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test touches the user's ~/.mdl or cache."""
    monkeypatch.setenv("MDL_HOME", str(tmp_path / "default-home"))
    monkeypatch.setenv("MDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MDL_RUNTIME_DIR", str(tmp_path / "jobs"))  # only this test's mdl jobs share the cores


def tree_digest(path: Path) -> str:
    """Digest of every file's name and bytes under `path` (the registry must be byte-identical)."""
    digest = hashlib.sha256()
    if path.exists():
        for p in sorted(path.rglob("*")):
            if p.is_file() and p.name != "registry.lock":
                digest.update(p.relative_to(path).as_posix().encode())
                digest.update(p.read_bytes())
    return digest.hexdigest()


def tiny_tensors(seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "bn.running_mean": torch.randn(4, generator=g)}


def register_tiny(reg, name: str = "svhn", seed: int = 0):
    """A trunk (once) plus one version of `name`, with small random tensors."""
    trunks = reg.trunks()
    trunk = trunks[0] if trunks else reg.add_trunk(
        arch="resnet26_dw", width=0.25, source="src", num_params=1000, config={}, tensors=tiny_tensors(99))
    return reg.add_domain_version(
        name=name, method="dw", num_classes=10, domain_params=100, accuracy=50.0, trunk_id=trunk.id,
        classes=[str(i) for i in range(10)], data={"source": "test"}, config={}, tensors=tiny_tensors(seed))
