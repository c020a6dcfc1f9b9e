"""Files written whole or not at all, and files hashed: the one place for temp-file + ``os.replace``.

Every layer may import this module (the science, the registry, the workflows, the benchmarks): it
needs neither torch nor a database.

``atomic_path(path)`` yields a temp path in the target's folder (or ``dir``) for writers that want a
path (safetensors, torch.export, ONNX, numpy); when the block ends without an exception the temp file
is fsync'ed and ``os.replace``d onto ``path`` (and the folder fsync'ed), else it is removed and the
old file at ``path``, if any, stays as it was. ``atomic_write(path, data)`` does that for bytes or
text in hand. A process killed before the rename leaves only the hidden temp file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PathLike = str | os.PathLike

CHUNK = 1 << 20  # bytes per read when hashing a file


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks (the file is never held whole in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: PathLike, *, suffix: str = ".tmp", prefix: str | None = None, dir: PathLike | None = None,
                fsync: bool = True) -> Iterator[Path]:
    """A fresh temp file, named ``{prefix}{random}{suffix}`` (prefix: ``.{name}.``, hidden) in ``dir``
    (default: ``path``'s folder, which must exist; another folder must be on the same file system), that
    becomes ``path`` when the block succeeds. ``suffix`` is for writers that insist on a file name ending
    (torch.export: ``.pt2``). ``fsync``: the file's bytes, then the rename, reach the disk before return."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix,
                                dir=path.parent if dir is None else dir)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _new_file_mode())  # mkstemp makes 0600; the file gets what open() would have given it
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write(path: PathLike, data: bytes | str, *, suffix: str = ".tmp", prefix: str | None = None,
                 dir: PathLike | None = None, fsync: bool = True) -> None:
    """Put ``data`` (text is written as UTF-8) at ``path`` whole, or leave ``path`` untouched; see
    ``atomic_path`` for the temp file's name and place."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, suffix=suffix, prefix=prefix, dir=dir, fsync=fsync) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)


def _new_file_mode() -> int:
    """0666 less the process umask: the mode a plain open(path, "w") creates a file with."""
    try:  # Linux says the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder and needs none)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
