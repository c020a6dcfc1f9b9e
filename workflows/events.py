"""How a workflow reports: progress of its long steps and notes to the user, through a `Reporter`.

A workflow never prints. It calls `note(...)` and opens `task(...)`; whoever runs it chooses the
reporter for the duration (`reporting(r)`): the CLI renders with Rich on stderr, the server logs, the
Python API shows a progress bar or nothing. Nobody chose one: `SILENT`. The current reporter is a
context variable, so a server thread's reporter does not leak into another's.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Iterator, Literal

Level = Literal["info", "note", "warning"]  # a plain message; worth attention; probably a problem in the input


class Reporter:
    """Receives a workflow's events. This base class ignores them all (it is `SILENT`); a reporter
    overrides what it shows. ``task`` names one progress bar (e.g. "train"), unique while it runs."""

    def started(self, task: str, total: int | None, completed: int = 0) -> None:
        """A long step begins: ``total`` units (None: unknown), ``completed`` of them already done (a resume)."""

    def advanced(self, task: str, steps: int = 1, status: str = "") -> None:
        """``steps`` more units done; ``status``: a short line on where it stands (epoch, loss, rate)."""

    def finished(self, task: str) -> None:
        """The step ended (done or failed)."""

    def note(self, message: str, level: Level = "info") -> None:
        """A message for the user (plain text)."""


SILENT = Reporter()


class LoggingReporter(Reporter):
    """Events as log records (`mdl serve`, batch jobs): notes at their level, a task's start and end at
    INFO, its steps not at all (a log is not a progress bar)."""

    LEVELS = {"info": logging.INFO, "note": logging.INFO, "warning": logging.WARNING}

    def __init__(self, logger: logging.Logger | str = "mdl"):
        self.log = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.status: dict[str, str] = {}

    def started(self, task, total, completed=0):
        self.log.info("%s: started (%s steps)", task, "?" if total is None else total)

    def advanced(self, task, steps=1, status=""):
        self.status[task] = status

    def finished(self, task):
        last = self.status.pop(task, "")
        self.log.info("%s: finished%s", task, f" ({last})" if last else "")

    def note(self, message, level="info"):
        self.log.log(self.LEVELS[level], "%s", message)


class RichReporter(Reporter):
    """Events rendered with Rich (the CLI's stderr, the Python API in a terminal or notebook): notes as
    lines (notes and warnings prefixed in yellow), each task a progress bar that stays when done."""

    PREFIX = {"info": "", "note": "[yellow]note:[/] ", "warning": "[yellow]warning:[/] "}

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.bars: dict[str, tuple] = {}

    def started(self, task, total, completed=0):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=self.console, transient=False)
        bar.start()
        self.bars[task] = (bar, bar.add_task(task, total=total, completed=completed))

    def advanced(self, task, steps=1, status=""):
        bar, tid = self.bars[task]
        bar.update(tid, advance=steps, **({"description": _escape(status)} if status else {}))

    def finished(self, task):
        bar, _ = self.bars.pop(task)
        bar.stop()

    def note(self, message, level="info"):
        self.console.print(self.PREFIX[level] + _escape(message))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class Recorder(Reporter):
    """Keeps every event as a tuple, in order (tests; a caller that wants the notes afterwards)."""

    def __init__(self):
        self.events: list[tuple] = []

    def started(self, task, total, completed=0):
        self.events.append(("started", task, total, completed))

    def advanced(self, task, steps=1, status=""):
        self.events.append(("advanced", task, steps, status))

    def finished(self, task):
        self.events.append(("finished", task))

    def note(self, message, level="info"):
        self.events.append(("note", message, level))

    def notes(self, level: Level | None = None) -> list[str]:
        return [e[1] for e in self.events if e[0] == "note" and (level is None or e[2] == level)]


_current: contextvars.ContextVar[Reporter] = contextvars.ContextVar("mdl_reporter", default=SILENT)


def current() -> Reporter:
    return _current.get()


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter]:
    """Send the events of everything run inside to ``reporter`` (None: keep the current one)."""
    if reporter is None:
        yield current()
        return
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def set_reporter(reporter: Reporter) -> None:
    """Make ``reporter`` the current one for the rest of this context (a worker thread's whole life)."""
    _current.set(reporter)


def note(message: str, level: Level = "info") -> None:
    current().note(message, level)


class Task:
    """One running progress bar: what the training loops in mdl.core advance (their `progress=`)."""

    def __init__(self, reporter: Reporter, name: str):
        self.reporter, self.name, self._started = reporter, name, False

    def start(self, total: int | None, completed: int = 0) -> None:
        self.reporter.started(self.name, total, completed)
        self._started = True

    def advance(self, steps: int = 1, status: str = "") -> None:
        self.reporter.advanced(self.name, steps, status)


@contextlib.contextmanager
def task(name: str) -> Iterator[Task]:
    """A progress bar for the block; the loop inside calls ``start(total)`` once it knows the total."""
    t = Task(current(), name)
    try:
        yield t
    finally:
        if t._started:
            t.reporter.finished(name)
