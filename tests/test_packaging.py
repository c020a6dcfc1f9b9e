"""One installed top-level package: a wheel built from the repository holds `mdl` only (no generic
`cli` or `registry` in site-packages), with its data files; the Python API and `python -m mdl` work."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_mdl_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("mdl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mdl"}
    for needed in ("mdl/__init__.py", "mdl/__main__.py", "mdl/cli/app.py", "mdl/core/decathlon.json",
                   "mdl/core/nets/trunks/resnet26.py", "mdl/registry/store.py", "mdl/migrations/env.py",
                   "mdl/migrations/script.py.mako", "mdl/migrations/versions/0003_trunk_provenance_tensor_layout.py"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mdl = mdl.cli.app:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_python_api_and_module_entry_point():
    import mdl

    assert mdl.create_network is mdl.core.create_network
    proc = subprocess.run([sys.executable, "-m", "mdl", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "add-domain" in proc.stdout
