"""The `mdl` command: a thin Typer app. Heavy imports (torch, training) happen inside commands,
so `mdl --help` stays fast."""
from __future__ import annotations

import os

import click
import typer

from cli import data_cmd, db_cmd, registry_cmds, workflow_cmds
from cli._output import fail

app = typer.Typer(
    name="mdl",
    help="Multi-domain learning: one frozen trunk, a small adapter per visual domain, a versioned registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

registry_cmds.register(app)
workflow_cmds.register(app)
app.add_typer(db_cmd.app, name="db", help="Registry database maintenance (schema upgrades).")
app.add_typer(data_cmd.app, name="data", help="Look at a dataset before training on it; export builtin domains.")


def main() -> None:
    """Console entry point: every failure becomes one line on stderr and a non-zero exit."""
    try:
        code = app(standalone_mode=False)  # non-standalone: Click returns exit codes instead of exiting
    except click.exceptions.Exit as exc:  # --help, typer.Exit
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        fail(KeyboardInterrupt("aborted"))
    except click.ClickException as exc:  # usage errors: Click's message, exit 2
        if os.environ.get("MDL_DEBUG") == "1":
            raise
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the CLI boundary: nothing escapes as a traceback
        fail(exc)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
