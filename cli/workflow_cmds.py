"""Training workflows: pretrain, add-domain, gate-train, score, predict, demo."""
from __future__ import annotations

import typer

from cli._output import CliError, Home


def _not_yet(command: str) -> None:
    raise CliError(f"`mdl {command}` is not implemented yet", hint="it arrives with the end-to-end workflow issue")


def register(app: typer.Typer) -> None:
    @app.command()
    def pretrain(home: Home = None) -> None:
        """Train the whole network on a source domain and register it as a trunk version."""
        _not_yet("pretrain")

    @app.command("add-domain")
    def add_domain(name: str, home: Home = None) -> None:
        """Train and register a new version of domain NAME against the current trunk."""
        _not_yet("add-domain")

    @app.command("gate-train")
    def gate_train(home: Home = None) -> None:
        """Train the soft-sharing gates across the registered domains."""
        _not_yet("gate-train")

    @app.command()
    def score(home: Home = None) -> None:
        """Per-domain accuracy and the Visual Decathlon total."""
        _not_yet("score")

    @app.command()
    def predict(name: str, home: Home = None) -> None:
        """Classify images with a registered domain."""
        _not_yet("predict")

    @app.command()
    def demo(home: Home = None) -> None:
        """Run the whole workflow on the bundled mini-decathlon."""
        _not_yet("demo")
