"""The `mdl` command: a thin Typer app. Heavy imports (torch, training) happen inside commands,
so `mdl --help` stays fast."""
from __future__ import annotations

import typer

from mdl.cli import data_cmd, db_cmd, methods_cmds, registry_cmds, serve_cmds, trunk_cmd, workflow_cmds
from mdl.cli._output import err, fail
from mdl.workflows.events import RichReporter, reporting

app = typer.Typer(
    name="mdl",
    help="Multi-domain learning: one frozen trunk, a small adapter per visual domain, a versioned registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for module in (registry_cmds, workflow_cmds, methods_cmds, serve_cmds):
    for name, command in module.COMMANDS.items():
        app.command(name)(command)
app.add_typer(trunk_cmd.app, name="trunk", help="Import pretrained trunks (ImageNet Lite0 offline, a weights file, timm).")
app.add_typer(db_cmd.app, name="db", help="Registry database maintenance (schema upgrades).")
app.add_typer(data_cmd.app, name="data", help="Look at a dataset before training on it; export builtin domains.")


def main() -> None:
    """Console entry point: Typer handles --help and usage errors (exit 2); any other failure becomes
    one red line on stderr and exit 1."""
    try:
        try:
            with reporting(RichReporter(err)):
                app()
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the CLI boundary: nothing escapes as a traceback
            fail(exc)
    except SystemExit as done:
        _leave_torchrun(done.code)
        raise


def _leave_torchrun(code) -> None:
    """A process that ran in a torchrun group ends here, without the interpreter's teardown
    (mdl.core.distributed.exit_process says why); any other process exits normally."""
    import sys

    if "mdl.core.distributed" in sys.modules:  # only commands that train import it
        from mdl.core import distributed

        if isinstance(code, str):  # sys.exit("message") prints it; os._exit would not
            print(code, file=sys.stderr)
        distributed.exit_process(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
