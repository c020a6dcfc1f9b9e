"""The layering DESIGN.md draws, read from the source: who may import whom (function-level imports
included), and no import cycle anywhere. Data flows one way: cli, serve, the Python API -> workflows
-> (registry, core); the registry never imports the science, the science never imports the database,
and nothing but the CLI imports the CLI."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"mdl_package": "mdl", "mdl_core": "mdl.core", "registry": "mdl.registry", "migrations": "mdl.migrations",
           "workflows": "mdl.workflows", "cli": "mdl.cli", "serve": "mdl.serve"}
# layer -> the layers it may import; "root" is the package's own top-level modules (mdl, mdl.api, ...)
MAY_IMPORT = {
    "root": {"root", "workflows", "core"},
    "core": {"core", "root"},
    "registry": {"registry", "migrations", "root"},
    "migrations": {"registry", "migrations", "root"},
    "workflows": {"workflows", "registry", "core", "root"},
    "serve": {"serve", "workflows", "registry", "core", "root"},
    "cli": {"cli", "serve", "workflows", "registry", "migrations", "core", "root"},
}
EXCEPTIONS = {("mdl.__main__", "mdl.cli.app")}  # `python -m mdl` is the command line
FORBIDDEN_THIRD_PARTY = {"core": {"sqlalchemy", "alembic", "filelock"}, "registry": {"torchvision", "timm"}}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in FOLDERS.items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = list(f.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = f
    return mods


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("core", "registry", "migrations", "workflows", "cli", "serve"):
        return parts[1]
    return "root"


def _imports(module: str) -> set[str]:
    """Every module ``module`` imports anywhere in its body (top level, functions, TYPE_CHECKING blocks):
    ``from a.b import c`` counts as a.b.c when that is a module, else as a.b."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return found - {module}


GRAPH = {m: {t for t in _imports(m) if t in MODULES} for m in MODULES}


def test_the_walk_sees_the_package():
    # a walk that found nothing would pass every rule below
    assert len(MODULES) > 60 and "mdl.workflows.train" in MODULES and "mdl.cli.app" in MODULES
    assert "mdl.workflows.common" in GRAPH["mdl.workflows.train"]
    assert "mdl.registry.store" in _imports("mdl.workflows.catalog")  # a function-level import counts


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    layer = _layer(module)
    wrong = sorted(t for t in GRAPH[module]
                   if _layer(t) not in MAY_IMPORT[layer] and (module, t) not in EXCEPTIONS)
    assert not wrong, f"{module} ({layer}) imports {wrong}"
    third = {t.split(".")[0] for t in _imports(module)} & FORBIDDEN_THIRD_PARTY.get(layer, set())
    assert not third, f"{module} ({layer}) imports {sorted(third)}"


def test_no_import_cycles():
    """Tarjan's strongly connected components over the whole import graph: any component with more than
    one module is a cycle (a package importing its own submodules is not one: parents are not edges)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_helpers_across_modules():
    """A module's `_private` names are its own: nobody imports them from another module."""
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mdl"):
                offenders += [f"{module}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_benchmarks_do_not_import_the_cli():
    """bench/ drives the workflow layer (or the API) as a user's script would, never the command line's code."""
    offenders = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "mdl.cli" or n.startswith("mdl.cli.")]
    assert not offenders, offenders
