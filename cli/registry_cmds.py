"""Registry commands: init, list, show, verify, remove."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
