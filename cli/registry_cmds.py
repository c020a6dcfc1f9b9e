"""Registry commands: init, list, show, promote, verify, remove. Thin: they read and write through
mdl.workflows.catalog and registry.Registry."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from mdl.cli._output import emit_json, info, out
from mdl.cli.options import Home, Json
from mdl.workflows.catalog import domain_history, init_registry, list_versions, open_registry, version_row


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def versions_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col, justify in [("domain", "left"), ("v", "right"), ("method", "left"), ("classes", "right"),
                         ("params", "right"), ("% trunk", "right"), ("val acc", "right"), ("trunk", "left"),
                         ("created", "left"), ("status", "left")]:
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(
            r["name"], str(r["version"]), r["method"], str(r["num_classes"]), _fmt_params(r["domain_params"]),
            f"{r['domain_params_pct_of_trunk']:.1f}" if r["domain_params_pct_of_trunk"] is not None else "-",
            f"{r['accuracy']:.2f}" if r["accuracy"] is not None else "-", r["trunk"], r["created"].replace("T", " "),
            "removed" if r["removed"] else ("current" if r.get("current", True) else "") + (" (pinned)" if r.get("pinned") else ""),
        )
    return table


def init(home: Home = None, as_json: Json = False) -> None:
    """Create the registry (database schema via migrations, artifact store)."""
    reg, created = init_registry(home)
    result = {"home": str(reg.home), "created": created, "schema": reg.schema_revision()}
    if as_json:
        emit_json(result)
    else:
        verb = "Initialised" if created else "Already initialised:"
        info(f"{verb} registry at {reg.home} (schema {result['schema']})")


def list_(home: Home = None, as_json: Json = False,
          all_: Annotated[bool, typer.Option("--all", help="Include removed domains and versions.")] = False) -> None:
    """Registered domains: current version, method, classes, per-domain parameters, accuracy."""
    reg = open_registry(home)
    rows = [version_row(v) for v in list_versions(reg, include_removed=all_)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        info(f"No domains registered in {reg.home} yet (next: `mdl add-domain NAME --data SRC`, which imports the default trunk on first use).")
        return
    trunks = ", ".join(f"{t.label} ({_fmt_params(t.num_params)}, w={t.width:g})" for t in reg.trunks())
    out.print(versions_table(rows, f"Domains in {reg.home}  ·  trunks: {trunks}"))


def show(name: str, home: Home = None, as_json: Json = False) -> None:
    """Every version of domain NAME (removed ones marked), with gates and data provenance."""
    history = domain_history(open_registry(home), name)
    if as_json:
        emit_json(history)
        return
    rows = history["versions"]
    out.print(versions_table(rows, f"Domain {name}"))
    for r in rows:
        if r["gate"]:
            g = r["gate"]
            out.print(f"  v{r['version']} gate v{g['version']} ({g['placement']}): "
                      f"{g['accuracy']:.2f} with, {g['accuracy_without']:.2f} without")


def promote(name: str,
            version: Annotated[Optional[int], typer.Option("--version", "-v", min=1, help="Make this version current.")] = None,
            latest: Annotated[bool, typer.Option("--latest", help="Unpin: the newest version not removed is current again.")] = False,
            home: Home = None, as_json: Json = False) -> None:
    """Pin which version of NAME is current (list, show, predict, serve, score and export follow), or unpin it.

    A rollback without removing anything: newer versions stay registered and can be promoted later."""
    if (version is None) == (not latest):
        raise ValueError("give --version N to pin a version, or --latest to unpin")
    reg = open_registry(home)
    v = reg.promote(name, version)
    if as_json:
        emit_json(version_row(v) | {"current": True})
    elif version is None:
        info(f"{name}: unpinned; current is v{v.version} (the newest not removed)")
    else:
        info(f"{name}: v{v.version} is now current (pinned); newer versions stay registered")


def verify(home: Home = None, as_json: Json = False) -> None:
    """Re-hash every artifact; report missing or mismatched files (exit 1 if any)."""
    reg = open_registry(home)
    report = reg.verify()
    if as_json:
        emit_json(report)
    else:
        for p in report["problems"]:
            info(f"[red]{p['status']}[/]: {p['path']} ({p['kind']})")
        for p in report["unrecorded_files"]:
            info(f"[yellow]unrecorded file[/] (no registry row points at it): {p}")
        if report["unrecorded_files"]:
            info("  left by a write killed before its row committed; harmless: the next version that needs "
                 "its name moves it to quarantine/, and you may delete it")
        if report["quarantined_files"]:
            info(f"{len(report['quarantined_files'])} unrecorded file(s) moved aside in {reg.home / 'quarantine'}; "
                 "inspect or delete them")
        info(f"{report['ok']}/{report['checked']} artifacts ok in {reg.home}")
    if report["problems"]:
        raise typer.Exit(1)


def remove(name: str, version: Annotated[Optional[int], typer.Option("--version", "-v", help="Only this version.")] = None,
           home: Home = None, as_json: Json = False) -> None:
    """Mark domain NAME (or one version) removed. History and files are kept; numbers are never reused."""
    reg = open_registry(home)
    marked = reg.remove(name, version)
    if as_json:
        emit_json({"name": name, "removed_versions": marked, "domain_removed": version is None})
    else:
        what = f"{name} v{version}" if version is not None else f"domain {name}"
        info(f"Removed {what} (versions marked: {', '.join(map(str, marked)) or 'none'}).")


# command name -> function, in the order `mdl --help` lists them
COMMANDS = {"init": init, "list": list_, "show": show, "promote": promote, "verify": verify, "remove": remove}
