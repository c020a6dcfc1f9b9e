"""How every command talks: results on stdout (JSON with --json), messages and errors on stderr.

Errors are one red line and exit code 1 (usage errors: 2, from Click); a traceback only with MDL_DEBUG=1.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape



def _console(stream, **kw) -> Console:
    """Rich assumes 80 columns when not on a terminal, which cuts and wraps tables in logs and pipes
    (`mdl list | grep ...`); there, use a width that fits them unless $COLUMNS says otherwise."""
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = PIPED_WIDTH if piped and not os.environ.get("COLUMNS", "").isdigit() else None
    return Console(highlight=False, soft_wrap=True, width=width, **kw)


PIPED_WIDTH = 220
out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)



class CliError(Exception):
    """A user-facing failure: its message (and hint) is the whole story, no traceback needed."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def _finite(obj: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    """Pure JSON on stdout (strict: NaN/Infinity become null): no Rich markup, no wrapping."""
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n")
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
