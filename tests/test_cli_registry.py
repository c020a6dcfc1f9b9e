"""The registry commands through the real `mdl` process: output contract and every error path."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import register_tiny, tree_digest

from mdl.registry.store import Registry


@pytest.fixture
def populated(home):
    reg = Registry.init(home)[0]
    register_tiny(reg, "svhn")
    register_tiny(reg, "svhn", seed=1)
    register_tiny(reg, "dtd", seed=2)
    reg.close()
    return home


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from mdl.cli.app import app; import typer.main; typer.main.get_command(app); "
            "print(sorted(m for m in ('torch', 'torchvision', 'sqlalchemy', 'alembic') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    proc = subprocess.run([sys.executable, "-m", "mdl", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    for command in ["init", "pretrain", "add-domain", "list", "show", "gate-train", "score", "predict",
                    "verify", "remove", "demo", "data", "db", "trunk"]:
        assert f" {command} " in proc.stdout, command


def test_init_is_idempotent_and_json_is_pure(mdl, home):
    first = mdl("init", "--json", home=home)
    assert first.code == 0 and first.json()["created"] is True
    second = mdl("init", "--json", home=home)
    assert second.code == 0 and second.json() == {**first.json(), "created": False}


def test_list_and_show_json(mdl, populated):
    rows = mdl("list", "--json", home=populated).json()
    assert [(r["name"], r["version"]) for r in rows] == [("svhn", 2), ("dtd", 1)]
    assert {"name", "version", "method", "num_classes", "domain_params", "accuracy"} <= set(rows[0])
    assert rows[0]["domain_params_pct_of_trunk"] == 10.0
    shown = mdl("show", "svhn", "--json", home=populated).json()
    assert [(v["version"], v["current"]) for v in shown["versions"]] == [(1, False), (2, True)]
    table = mdl("list", home=populated)
    assert table.code == 0 and "svhn" in table.stdout and "dtd" in table.stdout


def test_remove_marks_and_keeps_history(mdl, populated):
    res = mdl("remove", "svhn", "--version", "2", "--json", home=populated)
    assert res.code == 0 and res.json()["removed_versions"] == [2]
    assert [(r["name"], r["version"]) for r in mdl("list", "--json", home=populated).json()] == [("svhn", 1), ("dtd", 1)]
    assert len(mdl("list", "--all", "--json", home=populated).json()) == 3


def test_verify_reports_tampering_and_exits_1(mdl, populated):
    assert mdl("verify", home=populated).code == 0
    reg = Registry.open(populated)
    path = populated / reg.domain_version("dtd").artifact.path
    path.write_bytes(path.read_bytes()[:-4] + b"evil")
    res = mdl("verify", "--json", home=populated)
    assert res.code == 1
    assert [p["status"] for p in res.json()["problems"]] == ["mismatch"]


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "unknown domain 'nope'"),
    (["remove", "nope"], "unknown domain 'nope'"),
    (["remove", "svhn", "--version", "9"], "has no version 9"),
    (["remove", "svhn", "--version", "abc"], None),  # usage error: Click's message, exit 2
    (["list", "--bogus"], None),
    (["pretrain"], None),  # --data is required
])
def test_error_paths_exit_nonzero_one_line_registry_unchanged(mdl, populated, args, message):
    before = tree_digest(populated)
    res = mdl(*args, home=populated)
    if message is None:
        assert res.code == 2
    else:
        assert res.code == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
    assert tree_digest(populated) == before


def test_uninitialised_home_and_bad_home(mdl, tmp_path):
    missing = tmp_path / "missing"
    res = mdl("list", home=missing)
    assert res.code == 1 and "mdl init" in res.stderr and not missing.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = mdl("init", home=a_file)
    assert res.code == 1 and "not a folder" in res.stderr and a_file.read_text() == "x"


def test_mdl_home_env_is_the_default(mdl, tmp_path):
    env_home = tmp_path / "from-env"
    assert mdl("init", env={"MDL_HOME": str(env_home)}).code == 0
    assert (env_home / "registry.db").is_file()


def test_old_schema_is_refused_until_db_upgrade(mdl, home):
    from mdl.registry import db

    home.mkdir()
    db.upgrade(Registry(home).engine, "0001")
    before = tree_digest(home)
    res = mdl("list", home=home)
    assert res.code == 1 and "mdl db upgrade" in res.stderr
    assert tree_digest(home) == before
    assert mdl("db", "upgrade", home=home).code == 0
    assert mdl("list", "--json", home=home).json() == []


def test_traceback_only_with_debug(mdl, home):
    res = mdl("show", "x", home=home, env={"MDL_DEBUG": "1"})
    assert res.code == 1 and "Traceback" in res.stderr
    json.dumps(res.stderr)  # stays text


def test_blank_or_garbage_registry_db_is_not_a_dead_end(mdl, home):
    """A 0-byte registry.db (a failed first `mdl init`) is initialised by `mdl init`; garbage is named in one
    line with what to do, never as raw SQLAlchemy text."""
    home.mkdir(parents=True)
    (home / "registry.db").write_bytes(b"")
    listed = mdl("list", home=home)
    assert listed.code == 1 and "run `mdl init" in listed.stderr
    assert mdl("init", "--json", home=home).code == 0
    assert mdl("list", "--json", home=home).code == 0
    (home / "registry.db").write_bytes(b"this is not a database" * 100)
    for args in (["init"], ["list"]):
        res = mdl(*args, home=home)
        lines = res.stderr.strip().splitlines()
        assert res.code == 1 and len(lines) == 1 and "not a readable SQLite database" in lines[0], res.stderr
        assert "move it aside" in lines[0] and "sqlalchemy" not in lines[0].lower()


def test_piped_tables_are_not_cut_to_80_columns(populated, tmp_path):
    """`mdl list | grep NAME` must find a long name: piped output gets a width that fits the table."""
    from conftest import run_mdl

    reg = Registry.open(populated)
    register_tiny(reg, "a-rather-long-domain-name-for-pipes", seed=3)
    res = run_mdl("list", home=populated, env={"COLUMNS": ""})
    assert res.code == 0
    assert any("a-rather-long-domain-name-for-pipes" in line for line in res.stdout.splitlines())


def test_wrong_data_path_fails_before_torch_loads(home):
    """The path check comes first: no torch start-up (seconds) before saying the folder does not exist."""
    code = ("import sys; from mdl.cli.app import main; "
            f"sys.argv = ['mdl', 'add-domain', 'x', '--data', '/no/such/folder', '--home', {str(home)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["1", "False"] and "data source not found: /no/such/folder" in proc.stderr


def test_unwritable_home_fails_before_training(mdl, home, monkeypatch):
    """Simulated (the suite may run as root, for whom chmod does not bite): when nothing can be written in
    the home, add-domain stops before loading data or training, in one line, registry unchanged."""
    import mdl.registry.artifacts as artifacts

    assert mdl("init", home=home).code == 0
    before = tree_digest(home)

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(artifacts.tempfile, "NamedTemporaryFile", refuse)
    res = mdl("add-domain", "x", "--data", "builtin:digits", "--epochs", "1", home=home)
    assert res.code == 1 and "is not writable (Permission denied)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and tree_digest(home) == before


def test_init_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, mdl, monkeypatch):
    """`mdl init` with no space left used to print SQLAlchemy's whole CREATE TABLE statement and leave a
    half-made registry.db behind (which later commands took for a registry)."""
    import sqlite3

    import sqlalchemy.exc

    import mdl.registry.db as db

    real = db.upgrade

    def full_disk(engine, revision="head"):
        with engine.begin() as conn:  # the file and a first table exist, then the disk fills up
            conn.exec_driver_sql("CREATE TABLE half_made (id INTEGER)")
        raise sqlalchemy.exc.OperationalError("CREATE TABLE domain_versions (\n id INTEGER NOT NULL, ...)", {},
                                              sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(db, "upgrade", full_disk)
    home = tmp_path / "new-home"
    result = mdl("init", home=home)
    assert result.code == 1 and result.stderr.startswith("error: disk full") and "KiB free" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "CREATE TABLE" not in result.stderr
    assert not home.exists()
    existing = tmp_path / "existing"  # a folder the user made: kept, only what init wrote goes
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert mdl("init", home=existing).code == 1
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    monkeypatch.setattr(db, "upgrade", real)
    assert mdl("init", home=home).code == 0  # and a later init on space works


def test_empty_registry_hint_names_add_domain(mdl, home):
    assert mdl("init", home=home).code == 0
    out = mdl("list", home=home)
    assert out.code == 0 and "mdl add-domain NAME --data SRC" in out.stderr and "pretrain" not in out.stderr
