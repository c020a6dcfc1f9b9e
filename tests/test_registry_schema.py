"""Migrations build the schema from empty, match the models, and upgrade an old registry to the same end."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from mdl.registry import db
from mdl.registry.errors import NotInitialised, SchemaMismatch
from mdl.registry.models import Base
from mdl.registry.store import DB_NAME, Registry

TABLES = {"artifacts", "trunks", "domains", "domain_versions", "gates", "evaluations", "alembic_version"}


def schema_of(engine) -> dict:
    """Tables, columns (name, type, nullable, pk), unique constraints and foreign keys, order-free."""
    insp = inspect(engine)
    out = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"], c["primary_key"])
                              for c in insp.get_columns(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(table)),
        }
    return out


def test_init_creates_schema_from_empty(home):
    reg, created = Registry.init(home)
    assert created
    assert set(inspect(reg.engine).get_table_names()) == TABLES
    assert reg.schema_revision() == db.head_revision(reg.engine)
    with reg.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrated_schema_equals_models(home):
    reg, _ = Registry.init(home)
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_old_schema_is_refused_with_hint_then_upgraded_identically(tmp_path):
    fresh, _ = Registry.init(tmp_path / "fresh")

    old_home = tmp_path / "old"
    old_home.mkdir()
    old = Registry(old_home)
    db.upgrade(old.engine, "0001")
    assert db.current_revision(old.engine) == "0001"

    with pytest.raises(SchemaMismatch, match="older") as exc:
        Registry.open(old_home)
    assert "mdl db upgrade" in exc.value.hint
    with pytest.raises(SchemaMismatch):  # `init` on an existing registry must not upgrade silently either
        Registry.init(old_home)

    before, after = Registry.upgrade(old_home)
    assert (before, after) == ("0001", db.head_revision(old.engine))
    assert schema_of(Registry.open(old_home).engine) == schema_of(fresh.engine)


def test_newer_schema_is_refused(home):
    reg, _ = Registry.init(home)
    with reg.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaMismatch, match="newer"):
        Registry.open(home)


def test_open_without_init_names_the_command(home):
    with pytest.raises(NotInitialised) as exc:
        Registry.open(home)
    assert "mdl init" in exc.value.hint
    assert not (home / DB_NAME).exists()
