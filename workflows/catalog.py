"""What the registry holds, in the shapes users see: the registry's home, one version as a row (the
JSON of `mdl list` / `mdl show` / `GET /v1/domains` and the Python API's `list()`), a domain's history."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HOME_ENV = "MDL_HOME"
DEFAULT_HOME = Path("~/.mdl").expanduser()


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """``home``, else $MDL_HOME, else ~/.mdl."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else DEFAULT_HOME


def open_registry(home: str | os.PathLike | None = None):
    """The registry at ``home`` (it must exist: `init_registry` creates one)."""
    from mdl.registry.store import Registry

    return Registry.open(resolve_home(home))


def init_registry(home: str | os.PathLike | None = None):
    """(registry, created): the registry at ``home``, created (schema and artifact store) if missing."""
    from mdl.registry.store import Registry

    return Registry.init(resolve_home(home))


def version_row(v) -> dict[str, Any]:
    """The public JSON shape of one domain version."""
    trunk_params = v.trunk.num_params or 0
    return {
        "name": v.name,
        "version": v.version,
        "method": v.method,
        "num_classes": v.num_classes,
        "domain_params": v.domain_params,
        "domain_params_pct_of_trunk": round(100.0 * v.domain_params / trunk_params, 2) if trunk_params else None,
        "accuracy": v.accuracy,
        "trunk": v.trunk.label,
        "created": v.created_at.isoformat(timespec="seconds"),
        "removed": v.removed_at.isoformat(timespec="seconds") if v.removed_at else None,
        "pinned": v.pinned,
    }


def trunk_row(trunk, **more) -> dict[str, Any]:
    """A registered trunk as `mdl trunk import --json` / `mdl pretrain --json` print it (``more``: the
    domains registered with it)."""
    return {"trunk": trunk.label, "num_params": trunk.num_params, "provenance": trunk.provenance, **more}


def gate_row(gate) -> dict[str, Any]:
    """A trained gate as `mdl gate-train --json` prints it: its target version, accuracy with and without."""
    return {"name": gate.target.name, "version": gate.target.version, "gate": gate.version,
            "placement": gate.placement, "scope": gate.config.get("scope", "gate"),
            "accuracy_with_gate": gate.accuracy, "accuracy_without_gate": gate.base_accuracy}


def list_versions(reg, include_removed: bool = False) -> list:
    """Every domain's current version (``include_removed``: every version of every domain ever
    registered, removed ones too), in registration order."""
    if not include_removed:
        return reg.current_versions()
    return [v for n in reg.domain_names() for v in reg.domain_versions(n)]


def domain_history(reg, name: str) -> dict[str, Any]:
    """Every version of ``name`` as rows (which one is current, its data, config, artifact, gate and
    evaluations): what `mdl show --json` prints."""
    versions = reg.domain_versions(name)
    try:
        current = reg.domain_version(name).version  # the pinned version, else the newest live one
    except KeyError:  # every version removed
        current = None
    rows = []
    for v in versions:
        row = version_row(v) | {"current": v.version == current, "data": v.data, "config": v.config,
                                "artifact": {"path": v.artifact.path, "sha256": v.artifact.sha256,
                                             "size": v.artifact.size}}
        gate = reg.current_gate(v.id)
        row["gate"] = None if gate is None else {
            "version": gate.version, "placement": gate.placement, "accuracy": gate.accuracy,
            "accuracy_without": gate.base_accuracy}
        row["evaluations"] = reg.evaluations(v.id)
        rows.append(row)
    return {"name": name, "reference_accuracy": versions[0].reference_accuracy if versions else None,
            "versions": rows}
