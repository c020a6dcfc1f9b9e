"""The networks a server answers with, rebuilt from the registry's current versions.

A :class:`Snapshot` is immutable once published: the served domains (their registry records), one
network per (trunk, method) group holding every served domain of the group, the versions refused and
why, and the rows `GET /v1/domains` returns. :meth:`ModelPool.refresh` polls the registry and, when the
current versions changed, builds a new snapshot beside the old one (hash-checked loads of the new
versions; domains whose version did not change are copied from the old network, not re-read) and
publishes it with one reference assignment, so the batcher, which reads ``pool.snapshot`` once per
batch, swaps networks between batches and never sees half a reload.

A version whose artifact fails its hash check (or cannot be loaded at all) is refused and reported; if
the domain had an older version loaded, that one keeps serving; every other domain keeps serving.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from mdl.registry.store import DomainVersionRecord, Registry
from mdl.workflows import events
from mdl.workflows.catalog import version_row
from mdl.workflows.common import NetworkLoader

log = logging.getLogger("mdl.serve")


@dataclass(frozen=True)
class Served:
    """One served domain: its registry record and the preprocessing its images get."""

    version: DomainVersionRecord
    group: tuple  # (trunk id, method): which network answers for it

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def preprocessing(self) -> tuple:
        d = self.version.data
        return tuple(d["mean"]), tuple(d["std"]), int(d["image_size"]), int(d["crop"])


@dataclass(frozen=True)
class Snapshot:
    generation: int
    domains: dict[str, Served] = field(default_factory=dict)
    networks: dict[tuple, Any] = field(default_factory=dict)      # group -> MultiDomainNet (eval, on device)
    members: dict[tuple, tuple] = field(default_factory=dict)     # group -> ((name, version id), ...) loaded
    refused: dict[str, str] = field(default_factory=dict)         # "name vN" -> reason
    refused_ids: frozenset = frozenset()                          # their version ids
    rows: list[dict] = field(default_factory=list)                # GET /v1/domains
    signature: tuple = ()


def _artifact_stat(reg: Registry, v: DomainVersionRecord) -> tuple:
    try:
        st = reg.artifacts.abspath(v.artifact.path).stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None, None


class ModelPool:
    def __init__(self, reg: Registry, dev, poll_s: float = 2.0):
        self.reg, self.dev, self.poll_s = reg, dev, float(poll_s)
        self.loader = NetworkLoader(reg)  # trunk tensors read (and hash-checked) once per trunk
        self.snapshot = Snapshot(generation=0)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one refresh at a time (the poller, or a caller)

    # ------------------------------------------------------------------ polling
    def start_polling(self) -> None:
        if self.poll_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="mdl-registry-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        # a new thread starts with no reporter: what the workflow layer says while reloading goes to the log
        events.set_reporter(events.LoggingReporter(log))
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a failed poll keeps the served snapshot; said on /healthz
                self.last_error = " ".join(str(exc).split()) or type(exc).__name__
                log.warning("registry poll failed: %s", self.last_error)

    # ------------------------------------------------------------------ reload
    def _signature(self, versions: list[DomainVersionRecord], refused_ids: set[int]) -> tuple:
        # a refused version is retried when its file changes (restored from a backup, say)
        return tuple((v.id, v.artifact.sha256, _artifact_stat(self.reg, v) if v.id in refused_ids else None)
                     for v in versions)

    def refresh(self) -> bool:
        """Publish a new snapshot if the registry's current versions changed; returns whether it did."""
        with self._lock:
            old = self.snapshot
            versions = self.reg.current_versions()
            sig = self._signature(versions, old.refused_ids)
            if sig == old.signature and old.generation > 0:
                return False
            groups: dict[tuple, list[DomainVersionRecord]] = {}
            for v in versions:
                groups.setdefault((v.trunk.id, v.method), []).append(v)
            domains, networks, members, refused, refused_now = {}, {}, {}, {}, set()
            for group, vs in groups.items():
                net, loaded, problems = self._build_group(old, group, vs)
                for v, reason in problems:
                    refused[f"{v.name} v{v.version}"] = reason
                    refused_now.add(v.id)
                if net is None:
                    continue
                networks[group], members[group] = net, tuple((r.name, r.id) for r in loaded)
                for r in loaded:
                    domains[r.name] = Served(r, group)
            rows = []
            for v in versions:
                served = domains.get(v.name)
                reason = refused.get(f"{v.name} v{v.version}")
                rows.append(version_row(v) | {
                    "served_version": served.version.version if served else None,
                    "refused": reason})
            sig = self._signature(versions, refused_now)
            self.snapshot = Snapshot(old.generation + 1, domains, networks, members, refused,
                                     frozenset(refused_now), rows, sig)
            for key, reason in refused.items():
                log.warning("refused %s: %s", key, reason)
            return True

    def _build_group(self, old: Snapshot, group: tuple, versions: list[DomainVersionRecord]):
        """The group's network with every loadable version; reuses the old network when nothing changed."""
        import torch

        wanted = tuple((v.name, v.id) for v in versions)
        if old.members.get(group) == wanted:
            return old.networks[group], [old.domains[n].version for n, _ in wanted], []
        trunk, method = versions[0].trunk, versions[0].method
        problems: list[tuple[DomainVersionRecord, str]] = []
        try:
            net = self.loader.network(trunk, method)
        except Exception as exc:  # noqa: BLE001 - a bad trunk artifact refuses its domains, not the server
            reason = f"trunk {trunk.label}: {' '.join(str(exc).split())}"
            return None, [], [(v, reason) for v in versions]
        old_net = old.networks.get(group)
        loaded = []
        for v in versions:
            prev = old.domains.get(v.name)
            if prev is not None and prev.version.id == v.id and old_net is not None:
                net.load_domain_state_dict(v.name, old_net.domain_state_dict(v.name))  # already hash-checked
                loaded.append(v)
                continue
            try:
                self.loader.add_version(net, v)  # hash-checked read of the artifact
                loaded.append(v)
                continue
            except Exception as exc:  # noqa: BLE001 - refused, reported, the others keep serving
                if v.name in net.domains:
                    net.remove_domain(v.name)
                problems.append((v, " ".join(str(exc).split()) or type(exc).__name__))
            if prev is not None and prev.group == group and old_net is not None and v.name in old_net.domains:
                net.load_domain_state_dict(v.name, old_net.domain_state_dict(v.name))  # keep the older version
                loaded.append(prev.version)
        if not loaded:
            return None, [], problems
        self.dev.prepare(net).eval()
        with torch.no_grad():  # nothing trains here: no autograd state on the served weights
            for p in net.parameters():
                p.requires_grad_(False)
        net.assume_static()  # served weights never change in place: no per-forward check of every tensor
        return net, loaded, problems
