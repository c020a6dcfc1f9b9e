"""How every command talks: results on stdout (JSON with --json), messages and errors on stderr.

Errors are one red line and exit code 1 (usage errors: 2, from Click); a traceback only with MDL_DEBUG=1.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_HOME = Path("~/.mdl").expanduser()

Home = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="MDL_HOME",
        help="Registry folder (default: $MDL_HOME, else ~/.mdl).",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout, nothing else there.")]


class CliError(Exception):
    """A user-facing failure: its message (and hint) is the whole story, no traceback needed."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def emit_json(obj: Any) -> None:
    """Pure JSON on stdout: no Rich markup, no wrapping."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    err.print(message)


def fail(exc: BaseException) -> NoReturn:
    """Print `exc` as one red line on stderr and exit 1 (traceback only with MDL_DEBUG=1)."""
    if os.environ.get("MDL_DEBUG") == "1":
        err.print_exception()
    message = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:  # KeyError quotes its message; show it plain
        message = str(exc.args[0])
    message = " ".join(message.split())  # keep it to one line
    hint = getattr(exc, "hint", None)
    if hint:
        message += f" ({hint})"
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise SystemExit(1)
