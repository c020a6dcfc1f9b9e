"""Content-checked artifact files: safetensors only (never pickle), written atomically, hashed.

A write goes to a temp file under `tmp/` (`.partial-*`, which `mdl verify` lists as stale), is fsync'ed,
then `os.replace`d into place (mdl.files.atomic_write); the sha256 is of the bytes in hand. A crash
before the rename leaves only a temp file that no row points at and no reader looks at. Every read
re-hashes the bytes and refuses a mismatch.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from mdl.files import atomic_write, sha256_file
from mdl.registry.errors import IntegrityFailure

if TYPE_CHECKING:  # torch is imported only when tensors are actually (de)serialised
    import torch

FORMAT = "mdl/1"


def encode_tensors(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, object]) -> bytes:
    from safetensors.torch import save

    meta = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)


def decode_tensors(data: bytes) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load

    return load(data)


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__, parsed without torch."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__", {})


def probe_writable(folder: Path) -> None:
    """Create and remove a file in `folder`: raises OSError when nothing can be written there."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".mdl-write-check-"):
        pass


class ArtifactStore:
    def __init__(self, home: Path):
        self.home = home
        self.tmp = home / "tmp"

    def abspath(self, relpath: str) -> Path:
        return self.home / relpath

    def write(self, relpath: str, data: bytes) -> tuple[str, int]:
        """Atomically place `data` at `relpath`; return (sha256, size)."""
        final = self.abspath(relpath)
        if final.exists():
            raise IntegrityFailure(f"artifact {relpath} already exists; refusing to overwrite")
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(data).hexdigest()
        atomic_write(final, data, prefix=TEMP_PREFIX, suffix=".safetensors", dir=self.tmp)
        return sha, len(data)

    def quarantine(self, relpath: str) -> str:
        """Move an unrecorded file out of a path a new row needs (the row is the truth: such a file is
        left by a write killed between its rename and its commit). Returns where it went."""
        src = self.abspath(relpath)
        dest = self.home / QUARANTINE / f"{relpath.replace('/', '__')}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest.relative_to(self.home).as_posix()

    def quarantined(self) -> list[str]:
        root = self.home / QUARANTINE
        return sorted(p.relative_to(self.home).as_posix() for p in root.iterdir()) if root.is_dir() else []

    def discard(self, relpath: str) -> None:
        """Undo a write whose row did not commit."""
        self.abspath(relpath).unlink(missing_ok=True)

    def read(self, relpath: str, sha256: str) -> bytes:
        path = self.abspath(relpath)
        if not path.is_file():
            raise IntegrityFailure(f"artifact {relpath} is missing", hint="run `mdl verify`")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityFailure(
                f"artifact {relpath} does not match its recorded sha256 (tampered or corrupted); refusing to load",
                hint="run `mdl verify`",
            )
        return data

    def check(self, relpath: str, sha256: str, size: int) -> str:
        """'ok', 'missing' or 'mismatch'."""
        path = self.abspath(relpath)
        if not path.is_file():
            return "missing"
        if path.stat().st_size != size or sha256_file(path) != sha256:
            return "mismatch"
        return "ok"

    def stale_temp_files(self) -> list[Path]:
        return sorted(self.tmp.glob(f"{TEMP_PREFIX}*")) if self.tmp.is_dir() else []

    def files(self) -> list[str]:
        """Every artifact file on disk, relative to home (temp files excluded)."""
        root = self.home / "artifacts"
        if not root.is_dir():
            return []
        return sorted(p.relative_to(self.home).as_posix() for p in root.rglob("*.safetensors"))


QUARANTINE = "quarantine"  # outside artifacts/: unrecorded files moved aside, kept for the user to inspect
TEMP_PREFIX = ".partial-"  # temp files of writes under tmp/: never read, listed by `mdl verify`
