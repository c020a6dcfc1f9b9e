"""`--threads N` / ``$MDL_THREADS`` for every compute command; the policy lives in mdl.core.threads
(a fair share of the cores among the mdl jobs running on the machine, re-counted while training)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

ENV = "MDL_THREADS"

Threads = Annotated[Optional[int], typer.Option(
    "--threads", envvar=ENV, min=1, show_default=False,
    help="CPU threads for torch (default: every core when alone, a fair share when other mdl jobs run).")]


def apply(threads: int | None = None) -> int:
    """Set the policy before torch starts its thread pool; returns the thread count."""
    from mdl.core import threads as policy

    return policy.start(threads)
