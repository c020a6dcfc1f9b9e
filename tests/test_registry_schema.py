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


def test_0004_keeps_pre_reference_resnet26_trunks_on_the_network_they_were_trained_as(home):
    """Trunks registered before the ResNet-26 family followed the reference code were built by the
    earlier definition; the upgrade names them resnet26_v0 / resnet26_dw_v0 and they load exactly."""
    import torch

    from mdl.workflows.common import NetworkLoader
    from mdl.core import create_network

    torch.manual_seed(0)
    old_net = create_network("resnet26_dw_v0", method="dw", domains={"src": 3}, width=0.125).eval()
    reg, _ = Registry.init(home)
    # what a 0003-era registry holds: the old network's tensors under the name "resnet26_dw"
    reg.add_trunk(arch="resnet26_dw", width=0.125, source="src", num_params=1, config={},
                  tensors=old_net.trunk_state_dict("src"))
    reg.add_trunk(arch="resnet26", width=0.125, source="src", num_params=1, config={},
                  tensors=create_network("resnet26_v0", method="bn", domains={"s": 2}, width=0.125).trunk_state_dict("s"))
    from alembic import command

    command.downgrade(db._alembic_config(reg.engine), "0004")  # later revisions' columns out, then mark it 0003
    with reg.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
    assert Registry.upgrade(home)[0] == "0003"
    reg = Registry.open(home)
    assert sorted(t.arch for t in reg.trunks()) == ["resnet26_dw_v0", "resnet26_v0"]
    trunk = next(t for t in reg.trunks() if t.arch == "resnet26_dw_v0")
    net = NetworkLoader(reg).network(trunk, "dw")
    net.load_domain_state_dict("src", old_net.domain_state_dict("src"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x, "src"), old_net(x, "src"))
