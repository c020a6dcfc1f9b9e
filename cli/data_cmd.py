"""`mdl data ...`: inspect a dataset source, export builtin domains (filled in by the data work)."""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
