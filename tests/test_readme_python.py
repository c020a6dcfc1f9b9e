"""The README's Python section: its first `python` block runs as written, in a fresh folder with a
fresh registry, and prints what it says it does (the real ImageNet trunk, real training: ~1 minute)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_section_block() -> str:
    text = README.read_text()
    headings = [m for m in re.finditer(r"^## .*$", text, flags=re.M)]
    start = next(m.end() for m in headings if "Python" in m.group(0))
    block = re.search(r"^```python\n(.*?)^```", text[start:], flags=re.M | re.S)
    assert block, "the Python section has no ```python block"
    return block.group(1)


def test_the_python_section_runs_as_written(tmp_path):
    code = python_section_block()
    assert "mdl.Client(" in code and "add_domain" in code and "predict" in code and "score" in code
    env = {**os.environ, "MDL_HOME": str(tmp_path / "unused-home"), "MDL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("digits v1: ") and "own parameters" in out[0]
    assert any(line.startswith("photos v1 dw ") for line in out)  # listed, with its accuracy
    assert "('digits', " in proc.stdout and "('photos', " in proc.stdout  # the mixed pass answered for both
    assert out[-1] == "torch.Size([2, 16])"  # photos has 16 classes: the padded logits of one network
    assert (tmp_path / "mdl-home" / "registry.db").is_file() and not (tmp_path / "unused-home").exists()
