"""The workflow layer's reporting interface: whoever runs a workflow picks where its progress and notes
go (Rich on the CLI's stderr, a log, a recorder, nowhere), for that call and that thread only."""
from __future__ import annotations

import io
import logging
import threading

import pytest
from rich.console import Console

from mdl.workflows import events


def test_reporting_nests_restores_and_stays_in_its_thread():
    outer, inner = events.Recorder(), events.Recorder()
    assert events.current() is events.SILENT
    seen_in_thread = []
    with events.reporting(outer):
        events.note("one")
        with events.reporting(inner):
            events.note("two", "warning")
            t = threading.Thread(target=lambda: seen_in_thread.append(events.current()))
            t.start()
            t.join()
        with events.reporting(None):  # None keeps the current one
            events.note("three")
    assert events.current() is events.SILENT
    assert outer.notes() == ["one", "three"] and inner.notes("warning") == ["two"] and inner.notes("info") == []
    assert seen_in_thread == [events.SILENT]  # a new thread does not inherit a caller's reporter


def test_a_task_is_finished_once_started_even_when_the_loop_fails():
    rec = events.Recorder()
    with events.reporting(rec):
        with events.task("never-started"):
            pass
        with pytest.raises(RuntimeError):
            with events.task("train") as t:
                t.start(10, completed=2)
                t.advance(1, "epoch 1")
                raise RuntimeError("diverged")
    assert rec.events == [("started", "train", 10, 2), ("advanced", "train", 1, "epoch 1"), ("finished", "train")]


def test_rich_reporter_prefixes_levels_and_prints_messages_verbatim():
    buf = io.StringIO()
    rep = events.RichReporter(Console(file=buf, width=200, color_system=None))
    rep.note("Imported trunk [x]")  # square brackets are text, not Rich markup
    rep.note("an unfinished run exists", "note")
    rep.note("data/: 3 images skipped", "warning")
    rep.started("train", 4)
    rep.advanced("train", 4, "epoch 1/1 loss 0.5")
    rep.finished("train")
    lines = buf.getvalue().splitlines()
    assert lines[:3] == ["Imported trunk [x]", "note: an unfinished run exists", "warning: data/: 3 images skipped"]
    assert "epoch 1/1 loss 0.5" in buf.getvalue() and "4/4" in buf.getvalue()


def test_logging_reporter_logs_notes_at_their_level(caplog):
    rep = events.LoggingReporter("mdl.test")
    with caplog.at_level(logging.INFO, logger="mdl.test"):
        rep.note("hello")
        rep.note("careful", "warning")
        rep.started("train", 3)
        rep.advanced("train", 3, "loss 0.1")
        rep.finished("train")
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [(logging.INFO, "hello"), (logging.WARNING, "careful"), (logging.INFO, "train: started (3 steps)"),
                   (logging.INFO, "train: finished (loss 0.1)")]


def test_the_cli_renders_workflow_notes_on_stderr(tmp_path, mdl):
    """What a workflow notes reaches the CLI user on stderr, prefixed by level; stdout keeps the JSON."""
    from _serve_helpers import make_registry

    home = tmp_path / "reg"
    make_registry(home, {"alpha": 3}).close()
    res = mdl("export", "alpha", "--format", "torchscript", "--out", str(tmp_path / "m.ts"), "--json", home=home)
    assert res.code == 0, res.stderr
    assert "note: TorchScript (torch.jit) is deprecated" in res.stderr
    assert res.json()["format"] == "torchscript"
