"""Versions, removal, integrity checks and crash-safety of the registry store."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import register_tiny, tiny_tensors
from sqlalchemy import func, select

from mdl.registry.artifacts import read_metadata
from mdl.registry.errors import IntegrityFailure, NotFound, RegistryError
from mdl.registry.models import Artifact, DomainVersion
from mdl.registry.store import Registry


@pytest.fixture
def reg(home):
    return Registry.init(home)[0]


def count(reg, model) -> int:
    with reg.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_versions_increase_and_are_never_reused(reg):
    assert register_tiny(reg, "svhn").version == 1
    assert register_tiny(reg, "svhn", seed=1).version == 2
    assert reg.remove("svhn", 2) == [2]
    assert reg.domain_version("svhn").version == 1  # current falls back to the newest live one
    assert register_tiny(reg, "svhn", seed=2).version == 3  # 2 is removed, not free
    assert [v.version for v in reg.domain_versions("svhn")] == [1, 2, 3]
    assert reg.domain_versions("svhn")[1].removed_at is not None


def test_remove_whole_domain_keeps_history(reg):
    register_tiny(reg, "svhn")
    register_tiny(reg, "dtd")
    reg.remove("svhn")
    assert [v.name for v in reg.current_versions()] == ["dtd"]
    assert len(reg.domain_versions("svhn")) == 1
    with pytest.raises(RegistryError, match="already removed"):
        reg.remove("svhn")
    with pytest.raises(NotFound):
        reg.remove("nope")
    with pytest.raises(NotFound):
        reg.remove("dtd", 7)


def test_artifact_roundtrip_hash_and_header_metadata(reg):
    v = register_tiny(reg, "svhn", seed=3)
    loaded = reg.load_tensors(v.artifact)
    for key, tensor in tiny_tensors(3).items():
        assert torch.equal(loaded[key], tensor)
    meta = read_metadata((reg.home / v.artifact.path).read_bytes())
    assert meta["domain"] == "svhn" and meta["method"] == "dw"
    assert meta["arch"] == "resnet26_dw" and meta["trunk"] == "resnet26_dw:v1"


def test_tampered_artifact_is_refused_and_reported(reg):
    v = register_tiny(reg, "svhn")
    path = reg.home / v.artifact.path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityFailure, match="sha256"):
        reg.load_tensors(v.artifact)
    report = reg.verify()
    assert report["problems"] == [{"path": v.artifact.path, "kind": "domain", "status": "mismatch"}]
    path.unlink()
    assert reg.verify()["problems"][0]["status"] == "missing"


def test_invalid_name_writes_nothing(reg):
    register_tiny(reg, "svhn")
    with pytest.raises(RegistryError, match="invalid domain name"):
        register_tiny(reg, "../evil")
    assert count(reg, DomainVersion) == 1


def test_failed_rename_leaves_no_row_and_no_file(reg, monkeypatch):
    register_tiny(reg, "svhn")
    files_before = reg.artifacts.files()

    def crash(*_a, **_k):
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        register_tiny(reg, "svhn", seed=1)
    monkeypatch.undo()
    assert count(reg, DomainVersion) == 1 and count(reg, Artifact) == 2  # trunk + v1
    assert reg.artifacts.files() == files_before
    assert reg.artifacts.stale_temp_files() == []  # cleaned up on the way out
    assert register_tiny(reg, "svhn", seed=1).version == 2


def test_process_killed_between_write_and_rename(reg):
    """A hard exit (no cleanup runs) leaves only a hidden temp file: no row, no visible artifact."""
    register_tiny(reg, "svhn")
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from conftest import register_tiny
        from mdl.registry.store import Registry
        reg = Registry.open({str(reg.home)!r})
        os.replace = lambda *a, **k: os._exit(9)
        register_tiny(reg, "svhn", seed=5)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert [v.version for v in reg.domain_versions("svhn")] == [1]
    assert reg.artifacts.files() == sorted([reg.trunks()[0].artifact.path, reg.domain_version("svhn").artifact.path])
    report = reg.verify()
    assert report["problems"] == [] and report["unrecorded_files"] == []
    assert len(report["stale_temp_files"]) == 1  # visible to `mdl verify`, invisible to readers


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from conftest import register_tiny
    from mdl.registry.store import Registry
    reg = Registry.open(sys.argv[1])
    for i in range(int(sys.argv[2])):
        register_tiny(reg, "svhn", seed=i)
""")


def test_concurrent_writers_get_distinct_versions(reg):
    register_tiny(reg, "svhn")  # trunk exists before the race
    n = 6
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(reg.home), str(n), os.path.dirname(__file__)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    versions = [v.version for v in reg.domain_versions("svhn")]
    assert versions == list(range(1, 2 * n + 2))
    report = reg.verify()
    assert report["ok"] == report["checked"] == 2 * n + 2
    assert report["unrecorded_files"] == [] and report["stale_temp_files"] == []


def test_unknown_trunk_id_registers_nothing(reg):
    with pytest.raises(NotFound, match="trunk id"):
        reg.add_domain_version(name="svhn", method="dw", num_classes=2, domain_params=1, accuracy=None,
                               trunk_id=42, classes=["a", "b"], data={}, config={}, tensors=tiny_tensors())
    assert count(reg, DomainVersion) == 0 and reg.artifacts.files() == []


def test_orphan_artifact_is_quarantined_not_a_dead_end(home, mdl):
    """A kill between an artifact's rename and its row's commit leaves a file no row records; the next
    version that needs its name moves it aside instead of failing (after training) forever."""
    reg = Registry.init(home)[0]
    v1 = register_tiny(reg, "svhn")
    orphan = home / v1.artifact.path.replace("v1.safetensors", "v2.safetensors")
    shutil.copy(home / v1.artifact.path, orphan)
    assert reg.verify()["unrecorded_files"] == [orphan.relative_to(home).as_posix()]
    v2 = register_tiny(reg, "svhn", seed=5)
    assert v2.version == 2 and reg.load_tensors(v2.artifact)  # the new file, hash-checked
    report = reg.verify()
    assert report["unrecorded_files"] == [] and len(report["quarantined_files"]) == 1 and report["ok"] == 3
    out = mdl("verify", home=home)
    assert out.code == 0 and "moved aside" in out.stderr
