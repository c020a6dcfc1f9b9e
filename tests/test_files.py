"""mdl.files: a write lands whole or not at all (the old file stays, no temp file is left), and the
file hash equals hashlib's over the whole file; mdl.text.first_line."""
from __future__ import annotations

import hashlib
import os

import pytest

from mdl import files
from mdl.files import atomic_path, atomic_write, sha256_file
from mdl.text import first_line


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_puts_the_new_content_whole(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write(target, "new ✓")
    assert target.read_bytes() == "new ✓".encode("utf-8")
    atomic_write(target, b"\x00\x01" * 70_000, fsync=False)
    assert target.read_bytes() == b"\x00\x01" * 70_000
    assert _listing(tmp_path) == ["out.json"]


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".model.bin.")
            with open(tmp, "wb") as fh:
                fh.write(b"half of the new")
            raise RuntimeError("writer died midway")
    assert target.read_bytes() == b"old content"
    assert _listing(tmp_path) == ["model.bin"]


def test_a_failed_rename_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def crash(*_a, **_k):
        raise OSError("simulated crash at the rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and _listing(tmp_path) == ["a.txt"]


def test_temp_name_and_folder_are_the_callers(tmp_path):
    """torch.export wants a name ending in .pt2; the artifact store keeps its temp files in tmp/."""
    (tmp_path / "tmp").mkdir()
    seen = []
    with atomic_path(tmp_path / "net.pt2", suffix=".tmp.pt2") as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"graph")
    with atomic_path(tmp_path / "a.safetensors", prefix=".partial-", suffix=".safetensors", dir=tmp_path / "tmp") as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"tensors")
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".tmp.pt2")
    assert seen[1].parent == tmp_path / "tmp" and seen[1].name.startswith(".partial-")
    assert seen[1].name.endswith(".safetensors")
    assert (tmp_path / "net.pt2").read_bytes() == b"graph" and (tmp_path / "a.safetensors").read_bytes() == b"tensors"
    assert _listing(tmp_path) == ["a.safetensors", "net.pt2", "tmp"] and _listing(tmp_path / "tmp") == []


def test_sha256_file_equals_hashlib_over_more_than_one_chunk(tmp_path):
    data = bytes(range(256)) * (files.CHUNK // 256 * 2 + 3)  # two whole chunks and a partial third
    assert len(data) > 2 * files.CHUNK
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_first_line():
    assert first_line(ValueError("\n  bad header\nstack trace ...\n")) == "bad header"
    assert first_line(RuntimeError("x" * 500), 200) == "x" * 200
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("  \n ")) == "OSError"


def test_a_written_file_gets_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp's temp files are 0600; a results file or an export must be as readable as open() makes it."""
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "results.json", "[]")
        (tmp_path / "plain.json").write_text("[]")
    finally:
        os.umask(old)
    mode = (tmp_path / "results.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644
