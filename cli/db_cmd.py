"""`mdl db ...`: schema maintenance. Upgrades are explicit, never a side effect of another command."""
from __future__ import annotations

import typer

from mdl.cli._output import emit_json, info
from mdl.cli.options import Home, Json
from mdl.workflows.catalog import resolve_home

app = typer.Typer(no_args_is_help=True)


@app.command()
def upgrade(home: Home = None, as_json: Json = False) -> None:
    """Migrate the registry database to this mdl's schema."""
    from mdl.registry.store import Registry

    before, after = Registry.upgrade(resolve_home(home))
    if as_json:
        emit_json({"from": before, "to": after})
    else:
        info(f"Schema {before} -> {after}" if before != after else f"Schema already at {after}")


@app.command()
def current(home: Home = None, as_json: Json = False) -> None:
    """Show the registry's schema revision and this mdl's head revision."""
    from mdl.registry import db
    from mdl.registry.store import DB_NAME, Registry
    from mdl.registry.errors import NotInitialised

    path = resolve_home(home)
    if not (path / DB_NAME).is_file():
        raise NotInitialised(f"no mdl registry at {path}", hint=f"run `mdl init --home {path}`")
    reg = Registry(path)
    result = {"current": db.current_revision(reg.engine), "head": db.head_revision(reg.engine)}
    if as_json:
        emit_json(result)
    else:
        info(f"schema {result['current']} (this mdl: {result['head']})")
