"""The Python API: a registry by its home, and what the command line does with it, as calls.

    import mdl
    client = mdl.Client("~/mdl-home")                  # created if missing
    client.add_domain("digits", "builtin:digits", epochs=1)
    client.predict([image, "photo.png"], domain="digits")
    net = client.network(["digits"])                  # the multi-domain nn.Module

Every method is a thin call of the workflow layer (mdl.workflows), the same functions the CLI's
commands call, and returns what the CLI's ``--json`` prints (dicts and lists), except `network()`.
Progress and notes go to the client's reporter: Rich bars on stderr by default (terminal or
notebook), ``progress=False`` for none, or any mdl.workflows.events.Reporter (a LoggingReporter, say).
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from mdl.workflows import catalog, events

PathLike = str | os.PathLike


class Client:
    """One registry (its home folder) and the workflows over it."""

    def __init__(self, home: PathLike | None = None, *, create: bool = True,
                 progress: bool | events.Reporter = True):
        """``home``: the registry folder (default: $MDL_HOME, else ~/.mdl); ``create``: make it if it is
        missing (else a missing registry is an error); ``progress``: True (Rich progress bars and notes on
        stderr), False (silent) or a Reporter."""
        if isinstance(progress, events.Reporter):
            self.reporter = progress
        else:
            self.reporter = events.RichReporter() if progress else events.SILENT
        with events.reporting(self.reporter):
            self._reg = catalog.init_registry(home)[0] if create else catalog.open_registry(home)

    @property
    def home(self) -> Path:
        return self._reg.home

    @property
    def registry(self):
        """The underlying store (mdl.registry.store.Registry): records, artifacts, locks."""
        return self._reg

    def close(self) -> None:
        self._reg.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"mdl.Client({str(self.home)!r})"

    def _run(self, fn, *args, **kw):
        with events.reporting(self.reporter):
            return fn(*args, **kw)

    # --- what is registered ----------------------------------------------------------------------------
    def list(self, include_removed: bool = False) -> list[dict[str, Any]]:
        """Every domain's current version (``include_removed``: every version ever), as `mdl list --json`."""
        return [catalog.version_row(v) for v in catalog.list_versions(self._reg, include_removed)]

    def show(self, name: str) -> dict[str, Any]:
        """Every version of ``name`` with its data, config, artifact, gate and evaluations (`mdl show --json`)."""
        return catalog.domain_history(self._reg, name)

    def promote(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Pin ``version`` as ``name``'s current version (None: unpin, back to the newest not removed)."""
        return catalog.version_row(self._reg.promote(name, version)) | {"current": True}

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Mark ``name`` (or one version) removed; returns the versions marked. Nothing is deleted."""
        return self._reg.remove(name, version)

    def verify(self) -> dict[str, Any]:
        """Re-hash every artifact (`mdl verify --json`)."""
        return self._reg.verify()

    # --- training ------------------------------------------------------------------------------------
    def import_trunk(self, weights: PathLike | None = None, *, arch: str | None = None, **options) -> dict[str, Any]:
        """Register a pretrained trunk (default: the packaged ImageNet Lite0 weights); ``options`` as
        `mdl trunk import` (from_timm, source_name, image_size, mean, std, crop)."""
        from mdl.core.choices import DEFAULT_TRUNK
        from mdl.workflows.trunks import import_trunk

        trunk, version = self._run(import_trunk, self._reg, arch=arch or DEFAULT_TRUNK,
                                   path=None if weights is None else str(weights), **options)
        return catalog.trunk_row(trunk, domain=catalog.version_row(version) if version else None)

    def add_domain(self, name: str, data: PathLike, *, method: str = "dw", trunk: str | None = None,
                   source_domain: str | None = None, epochs: int = 10, **options) -> dict[str, Any]:
        """Train and register a new version of domain ``name`` from ``data`` (a decathlon, IDX or
        ImageFolder folder, or ``builtin:NAME``) against the frozen trunk, as `mdl add-domain`; a fresh
        registry imports the default trunk first. ``options``: mdl.workflows.train.TrainOptions' fields
        (lr, batch_size, weight_decay, device, seed, recipe, bn_stats, train_images, val_images, ...);
        what is not given is the recipe's. Returns the version's row (`mdl list --json`)."""
        from mdl.workflows.train import add_domain

        version = self._run(add_domain, self._reg, name, str(data), method=method, trunk=trunk,
                            source_domain=source_domain, opts=_train_options(epochs, options))
        return catalog.version_row(version)

    def gate_train(self, domains: Sequence[str] | None = None, *, epochs: int = 10, **options) -> list[dict[str, Any]]:
        """Train soft-sharing gates for ``domains`` (default: every gateable domain added to a trunk), as
        `mdl gate-train`; ``options``: mdl.workflows.gates.GateOptions' fields (placement, scope, lr, ...)."""
        from mdl.workflows.gates import GateOptions, train_gates

        gates = self._run(train_gates, self._reg, list(domains) if domains else None, GateOptions(epochs=epochs, **options))
        return [catalog.gate_row(g) for g in gates]

    # --- using what is registered ----------------------------------------------------------------------
    def predict(self, images, domain: str | Sequence[str], *, top_k: int = 5, device: str = "auto") -> list[dict[str, Any]]:
        """Classify ``images`` (one image or a list: paths, PIL images, encoded bytes or pixel tensors
        [3,H,W] / [H,W], uint8 or float in [0, 1]) with ``domain`` (one name for all, or one per image);
        every image of every domain goes through one stacked pass. Rows as `mdl predict --json`: image,
        domain, version, top (class, index, probability)."""
        from mdl.workflows.evaluate import classify

        images = list(images) if _is_many(images) else [images]
        names = [domain] * len(images) if isinstance(domain, str) else list(domain)
        if len(names) != len(images):
            raise ValueError(f"{len(images)} image(s) but {len(names)} domain name(s): give one name, or one per image")
        labels = [str(img) if isinstance(img, (str, os.PathLike)) else f"image {i}" for i, img in enumerate(images)]
        return self._run(classify, self._reg, list(zip(names, images)), top_k=top_k, device=device, labels=labels)

    def score(self, split: str = "val", *, results: PathLike | None = None, device: str = "auto",
              on_bad_image: str = "skip") -> dict[str, Any]:
        """Every current domain's accuracy on ``split`` and the Visual Decathlon total (`mdl score --json`);
        ``results``: also write the challenge's results.json there."""
        from mdl.workflows.evaluate import score

        return self._run(score, self._reg, split=split, results=None if results is None else Path(results),
                         device=device, on_bad_image=on_bad_image)

    def network(self, domains: str | Iterable[str] | None = None):
        """The multi-domain network (a MultiDomainNet, an nn.Module in eval mode on the CPU) holding the
        current versions of ``domains`` (default: every current domain; they must share one trunk and
        method). ``net(x, domain=name)``, or a list of names for a mixed batch; x is preprocessed as the
        current version's ``data`` in ``show(name)`` records (mean, std, image_size, crop)."""
        from mdl.workflows.evaluate import current_of, network_of

        if isinstance(domains, str):
            domains = [domains]
        names = list(domains) if domains is not None else [v.name for v in self._reg.current_versions()]
        if not names:
            raise ValueError(f"no domains registered in {self.home}")
        return network_of(self._reg, current_of(self._reg, names)).eval()

    def export(self, domains: Sequence[str], out: PathLike, fmt: str = "onnx") -> dict[str, Any]:
        """Write ``domains`` as one network file (onnx, pt2 or torchscript), checked against PyTorch (`mdl export`)."""
        from mdl.workflows.export import export

        return self._run(export, self._reg, list(domains), fmt, Path(out))


def _train_options(epochs: int, options: dict):
    from mdl.workflows.train import TrainOptions

    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known - {'epochs'}))}")
    return TrainOptions(epochs=epochs, **options)


def _is_many(images) -> bool:
    """A list or tuple of images (a single tensor, array, PIL image, path or bytes is one image)."""
    return isinstance(images, (list, tuple))
