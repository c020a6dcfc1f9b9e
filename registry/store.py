"""The registry: trunks, domains and their versions, gates, evaluations, and their artifacts.

Writers hold a file lock for the whole register step; version numbers come from max(version)+1
over every row ever written (removed ones included) and an insert that still collides on the unique
constraint is retried, as MLflow's SQLAlchemy store does. Readers take no lock (SQLite serialises).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from filelock import FileLock, Timeout
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mdl.registry import db
from mdl.registry.artifacts import ArtifactStore, decode_tensors, encode_tensors, probe_writable
from mdl.registry.errors import NotFound, NotInitialised, RegistryError
from mdl.registry.models import Artifact, Domain, DomainVersion, Evaluation, Gate, Trunk, utcnow
from mdl.text import first_line

DB_NAME = "registry.db"
LOCK_TIMEOUT_S = 120
VERSION_RETRIES = 5
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

T = TypeVar("T")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RegistryError(
            f"invalid domain name {name!r}: use 1-64 lowercase letters, digits, '_' or '-'"
        )
    return name


# --- plain records handed out of sessions (no lazy loading after the session closes) --------------


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    kind: str
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class TrunkRecord:
    id: int
    arch: str
    version: int
    width: float
    source: str
    num_params: int
    config: dict[str, Any]
    artifact: ArtifactRecord
    created_at: datetime
    removed_at: datetime | None
    provenance: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.arch}:v{self.version}"


@dataclass(frozen=True)
class DomainVersionRecord:
    id: int
    name: str
    version: int
    method: str
    num_classes: int
    domain_params: int
    accuracy: float | None
    trunk: TrunkRecord
    classes: list[Any]
    data: dict[str, Any]
    config: dict[str, Any]
    artifact: ArtifactRecord
    created_at: datetime
    removed_at: datetime | None
    reference_accuracy: float | None
    layout: int
    pinned_version: int | None = None  # the domain's pin (`mdl promote`), whichever version this is

    @property
    def pinned(self) -> bool:
        return self.pinned_version == self.version


@dataclass(frozen=True)
class GateRecord:
    id: int
    target: DomainVersionRecord
    version: int
    placement: str
    mixed: list[int]
    accuracy: float | None
    base_accuracy: float | None
    config: dict[str, Any]
    artifact: ArtifactRecord
    created_at: datetime


def _artifact(row: Artifact) -> ArtifactRecord:
    return ArtifactRecord(row.id, row.kind, row.path, row.sha256, row.size)


def _trunk(row: Trunk) -> TrunkRecord:
    return TrunkRecord(row.id, row.arch, row.version, row.width, row.source, row.num_params, dict(row.config),
                       _artifact(row.artifact), row.created_at, row.removed_at, dict(row.provenance or {}))


def _version(row: DomainVersion) -> DomainVersionRecord:
    return DomainVersionRecord(
        row.id, row.domain.name, row.version, row.method, row.num_classes, row.domain_params, row.accuracy,
        _trunk(row.trunk), list(row.classes), dict(row.data), dict(row.config), _artifact(row.artifact),
        row.created_at, row.removed_at or row.domain.removed_at, row.domain.reference_accuracy, row.layout,
        row.domain.pinned_version,
    )


def _current(domain: Domain) -> DomainVersion | None:
    """The version a domain serves: its pin while that version is live, else the newest not removed."""
    if domain.removed_at is not None:
        return None
    live = [v for v in domain.versions if v.removed_at is None]
    pinned = [v for v in live if v.version == domain.pinned_version]
    return pinned[0] if pinned else (max(live, key=lambda v: v.version) if live else None)


def _gate(row: Gate) -> GateRecord:
    return GateRecord(row.id, _version(row.target), row.version, row.placement, list(row.mixed), row.accuracy,
                      row.base_accuracy, dict(row.config), _artifact(row.artifact), row.created_at)


def _init_error(home: Path, exc: BaseException) -> RegistryError:
    """One line for a failed `init` (SQLAlchemy's text would print the whole CREATE TABLE statement)."""
    import errno
    import shutil

    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError: the driver's own error
    text = str(cause)
    if "disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        try:
            free = f"{shutil.disk_usage(home if home.exists() else home.parent).free / 1024:.0f} KiB free"
        except OSError:
            free = "free space unknown"
        return RegistryError(f"disk full: cannot create a registry at {home} ({free}); nothing was left behind")
    return RegistryError(f"cannot create a registry at {home}: {first_line(cause, 200)}")


class Registry:
    """Open with `Registry.init(home)` (creates or upgrades nothing silently) or `Registry.open(home)`."""

    def __init__(self, home: Path):
        self.home = Path(home).expanduser().resolve()
        self.db_path = self.home / DB_NAME
        self.engine = db.make_engine(self.db_path)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.artifacts = ArtifactStore(self.home)
        self._lock = FileLock(str(self.home / "registry.lock"), timeout=LOCK_TIMEOUT_S)

    # --- opening ------------------------------------------------------------------------------------

    @classmethod
    def init(cls, home: Path) -> tuple["Registry", bool]:
        """Create the registry at `home` (idempotent). Returns (registry, created)."""
        home = Path(home).expanduser()
        if home.exists() and not home.is_dir():
            raise RegistryError(f"--home {home} exists and is not a folder")
        if (home / DB_NAME).exists() and not db.is_blank(cls(home).engine):
            reg = cls.open(home)  # refuses an old schema instead of upgrading behind the user's back
            return reg, False
        made_home = not home.exists()
        before = set(home.iterdir()) if not made_home else set()
        home.mkdir(parents=True, exist_ok=True)
        reg = cls(home)
        try:
            with reg.writing():
                db.upgrade(reg.engine)
        except Exception as exc:  # a half-made registry.db would pass for a registry: nothing is left behind
            reg.close()
            for path in set(home.iterdir()) - before:
                path.unlink(missing_ok=True)
            if made_home:
                home.rmdir()
            raise _init_error(home, exc) from None
        return reg, True

    @classmethod
    def open(cls, home: Path) -> "Registry":
        home = Path(home).expanduser()
        if not (home / DB_NAME).is_file():
            raise NotInitialised(f"no mdl registry at {home}", hint=f"run `mdl init --home {home}`")
        reg = cls(home)
        db.check_schema(reg.engine, reg.home)  # a blank or unreadable file says what to do
        return reg

    @classmethod
    def upgrade(cls, home: Path) -> tuple[str | None, str]:
        """Migrate an existing registry to this mdl's schema; returns (from, to) revisions."""
        home = Path(home).expanduser()
        if not (home / DB_NAME).is_file():
            raise NotInitialised(f"no mdl registry at {home}", hint=f"run `mdl init --home {home}`")
        reg = cls(home)
        before = db.current_revision(reg.engine)
        with reg.writing():
            db.upgrade(reg.engine)
        return before, db.current_revision(reg.engine)

    def schema_revision(self) -> str | None:
        return db.current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- sessions and locking ----------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the registry's writer lock (re-entrant within this process)."""
        try:
            self._lock.acquire()
        except Timeout:
            raise RegistryError(f"registry at {self.home} is locked by another writer",
                                hint="try again when it finishes") from None
        try:
            yield
        finally:
            self._lock.release()

    def check_writable(self) -> None:
        """Fail at the start of a long job, not after its first epoch, when nothing can be written here."""
        try:
            probe_writable(self.home)
        except OSError as exc:
            raise RegistryError(f"registry home {self.home} is not writable ({exc.strerror})",
                                hint="fix its permissions or pick another --home") from None

    def session(self):
        return db.managed_session(self._sessions)

    def _register(self, build: Callable[[Session], tuple[T, str, bytes, Artifact]]) -> T:
        """Run `build` (which adds rows and returns the artifact bytes to place) under the writer lock.

        The file is placed only after the rows flush, and the transaction commits right after the
        rename; if anything fails the rows roll back and the placed file is removed. A unique-constraint
        conflict on the version number retries with the next number.
        """
        with self.writing():
            for attempt in range(VERSION_RETRIES):
                placed: str | None = None
                try:
                    with self.session() as s:
                        result, relpath, data, artifact = build(s)
                        s.flush()  # version conflicts surface here, before any file is written
                        if self.artifacts.abspath(relpath).exists():  # no row has this path (unique): an orphan
                            self.artifacts.quarantine(relpath)
                        artifact.sha256, artifact.size = self.artifacts.write(relpath, data)
                        placed = relpath
                        s.flush()
                    return result
                except IntegrityError:
                    if placed:
                        self.artifacts.discard(placed)
                    if attempt == VERSION_RETRIES - 1:
                        raise RegistryError("could not allocate a version number (concurrent writers)") from None
                except BaseException:
                    if placed:
                        self.artifacts.discard(placed)
                    raise
        raise AssertionError("unreachable")

    # --- trunks ------------------------------------------------------------------------------------

    def add_trunk(self, *, arch: str, width: float, source: str, num_params: int, config: Mapping[str, Any],
                  tensors: Mapping[str, Any], provenance: Mapping[str, Any] | None = None) -> TrunkRecord:
        def build(s: Session):
            version = (s.scalar(select(func.max(Trunk.version)).where(Trunk.arch == arch)) or 0) + 1
            relpath = f"artifacts/trunks/{arch}/v{version}.safetensors"
            art = Artifact(kind="trunk", path=relpath, sha256="", size=0)
            s.add(Trunk(arch=arch, version=version, width=width, source=source, num_params=num_params,
                        config=dict(config), provenance=dict(provenance or {}), artifact=art))
            meta = {"kind": "trunk", "arch": arch, "trunk": f"{arch}:v{version}", "width": width,
                    "source": source, "domain": source, "method": "trunk"}
            return version, relpath, encode_tensors(tensors, meta), art

        return self.trunk(arch, self._register(build))

    def trunk(self, arch: str, version: int | None = None) -> TrunkRecord:
        with self.session() as s:
            q = select(Trunk).where(Trunk.arch == arch, Trunk.removed_at.is_(None))
            if version is not None:
                q = q.where(Trunk.version == version)
            row = s.scalars(q.order_by(Trunk.version.desc())).first()
            if row is None:
                what = f"trunk {arch}" + (f" v{version}" if version is not None else "")
                raise NotFound(f"no {what} in the registry", hint="run `mdl pretrain` first")
            return _trunk(row)

    def trunks(self, include_removed: bool = False) -> list[TrunkRecord]:
        with self.session() as s:
            q = select(Trunk).order_by(Trunk.created_at, Trunk.id)
            if not include_removed:
                q = q.where(Trunk.removed_at.is_(None))
            return [_trunk(r) for r in s.scalars(q)]

    # --- domains -----------------------------------------------------------------------------------

    def add_domain_version(self, *, name: str, method: str, num_classes: int, domain_params: int,
                           accuracy: float | None, trunk_id: int, classes: list[Any], data: Mapping[str, Any],
                           config: Mapping[str, Any], tensors: Mapping[str, Any],
                           reference_accuracy: float | None = None) -> DomainVersionRecord:
        check_name(name)

        def build(s: Session):
            trunk = s.get(Trunk, trunk_id)
            if trunk is None:
                raise NotFound(f"trunk id {trunk_id} is not in the registry")
            domain = s.scalar(select(Domain).where(Domain.name == name))
            if domain is None:
                domain = Domain(name=name)
                s.add(domain)
                s.flush()
            domain.removed_at = None  # registering a new version brings a removed domain back
            if reference_accuracy is not None:
                domain.reference_accuracy = reference_accuracy
            version = (s.scalar(select(func.max(DomainVersion.version))
                                .where(DomainVersion.domain_id == domain.id)) or 0) + 1
            relpath = f"artifacts/domains/{name}/v{version}.safetensors"
            art = Artifact(kind="domain", path=relpath, sha256="", size=0)
            row = DomainVersion(domain=domain, version=version, method=method, num_classes=num_classes,
                                domain_params=domain_params, accuracy=accuracy, trunk=trunk, artifact=art,
                                classes=list(classes), data=dict(data), config=dict(config))
            s.add(row)
            meta = {"kind": "domain", "domain": name, "version": version, "method": method,
                    "arch": trunk.arch, "trunk": f"{trunk.arch}:v{trunk.version}", "num_classes": num_classes}
            return (name, version), relpath, encode_tensors(tensors, meta), art

        name, version = self._register(build)
        return self.domain_version(name, version)

    def _version_query(self, name: str):
        return select(DomainVersion).join(Domain).where(Domain.name == name)

    def domain_version(self, name: str, version: int | None = None) -> DomainVersionRecord:
        """A given version (removed ones too), or the current one: the pinned version (`promote`) while
        it is live, else the newest not removed."""
        with self.session() as s:
            domain = s.scalar(select(Domain).where(Domain.name == name))
            if domain is None:
                raise NotFound(f"unknown domain {name!r}", hint="see `mdl list`")
            if version is None:
                row = _current(domain)
            else:
                row = s.scalars(self._version_query(name).where(DomainVersion.version == version)).first()
            if row is None:
                what = f"version {version} of domain {name!r}" if version else f"domain {name!r} (all removed)"
                raise NotFound(f"no {what}", hint=f"see `mdl show {name}`")
            return _version(row)

    def domain_versions(self, name: str) -> list[DomainVersionRecord]:
        with self.session() as s:
            if s.scalar(select(Domain).where(Domain.name == name)) is None:
                raise NotFound(f"unknown domain {name!r}", hint="see `mdl list`")
            return [_version(r) for r in s.scalars(self._version_query(name).order_by(DomainVersion.version))]

    def current_versions(self) -> list[DomainVersionRecord]:
        """The current version (pinned, else newest not removed) of every non-removed domain, in
        registration order."""
        with self.session() as s:
            domains = s.scalars(select(Domain).where(Domain.removed_at.is_(None)).order_by(Domain.id))
            return [_version(row) for row in map(_current, domains) if row is not None]

    def promote(self, name: str, version: int | None) -> DomainVersionRecord:
        """Pin ``version`` as the domain's current version (None: unpin, back to the newest not removed)."""
        with self.writing(), self.session() as s:
            domain = s.scalar(select(Domain).where(Domain.name == name))
            if domain is None:
                raise NotFound(f"unknown domain {name!r}", hint="see `mdl list`")
            if domain.removed_at is not None:
                raise RegistryError(f"domain {name!r} is removed")
            if version is not None:
                row = next((v for v in domain.versions if v.version == version), None)
                if row is None:
                    raise NotFound(f"domain {name!r} has no version {version}", hint=f"see `mdl show {name}`")
                if row.removed_at is not None:
                    raise RegistryError(f"{name} v{version} is removed: only a live version can be current")
            domain.pinned_version = version
        return self.domain_version(name)

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Mark a version (or the whole domain) removed; rows and files stay. Returns versions marked."""
        with self.writing(), self.session() as s:
            domain = s.scalar(select(Domain).where(Domain.name == name))
            if domain is None:
                raise NotFound(f"unknown domain {name!r}", hint="see `mdl list`")
            rows = [v for v in domain.versions if version is None or v.version == version]
            if version is not None and not rows:
                raise NotFound(f"domain {name!r} has no version {version}", hint=f"see `mdl show {name}`")
            live = [v for v in rows if v.removed_at is None]
            if not live and (version is not None or domain.removed_at is not None):
                raise RegistryError(f"{name}" + (f" v{version}" if version else "") + " is already removed")
            now = utcnow()
            for v in live:
                v.removed_at = now
                if v.version == domain.pinned_version:  # the pin goes with it: current falls back to the newest
                    domain.pinned_version = None
            if version is None:
                domain.removed_at = now
            return [v.version for v in live]

    def domain_names(self) -> list[str]:
        """Every domain ever registered, removed ones too, in registration order."""
        with self.session() as s:
            return list(s.scalars(select(Domain.name).order_by(Domain.id)))

    # --- gates and evaluations ----------------------------------------------------------------------

    def add_gate(self, *, target_id: int, placement: str, mixed: list[int], accuracy: float | None,
                 base_accuracy: float | None, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> GateRecord:
        def build(s: Session):
            target = s.get(DomainVersion, target_id)
            if target is None:
                raise NotFound(f"domain version id {target_id} is not in the registry")
            version = (s.scalar(select(func.max(Gate.version)).where(Gate.domain_version_id == target_id)) or 0) + 1
            name = target.domain.name
            relpath = f"artifacts/gates/{name}/v{target.version}-gate{version}.safetensors"
            art = Artifact(kind="gate", path=relpath, sha256="", size=0)
            row = Gate(target=target, version=version, placement=placement, mixed=list(mixed), accuracy=accuracy,
                       base_accuracy=base_accuracy, config=dict(config), artifact=art)
            s.add(row)
            meta = {"kind": "gate", "domain": name, "version": target.version, "gate": version,
                    "method": target.method, "arch": target.trunk.arch,
                    "trunk": f"{target.trunk.arch}:v{target.trunk.version}", "placement": placement}
            return None, relpath, encode_tensors(tensors, meta), art

        self._register(build)
        return self.current_gate(target_id)

    def current_gate(self, target_id: int) -> GateRecord | None:
        with self.session() as s:
            row = s.scalars(select(Gate).where(Gate.domain_version_id == target_id, Gate.removed_at.is_(None))
                            .order_by(Gate.version.desc())).first()
            return _gate(row) if row else None

    def add_evaluation(self, *, domain_version_id: int, split: str, accuracy: float, num_samples: int,
                       gate_id: int | None = None) -> None:
        with self.writing(), self.session() as s:
            s.add(Evaluation(domain_version_id=domain_version_id, gate_id=gate_id, split=split,
                             accuracy=accuracy, num_samples=num_samples))

    def evaluations(self, domain_version_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(Evaluation).where(Evaluation.domain_version_id == domain_version_id).order_by(Evaluation.id)
            return [{"split": e.split, "accuracy": e.accuracy, "num_samples": e.num_samples, "gate_id": e.gate_id,
                     "created_at": e.created_at} for e in s.scalars(q)]

    # --- artifacts ---------------------------------------------------------------------------------

    def load_tensors(self, artifact: ArtifactRecord) -> dict[str, Any]:
        """Hash-checked load of an artifact's tensors."""
        return decode_tensors(self.artifacts.read(artifact.path, artifact.sha256))

    def verify(self) -> dict[str, Any]:
        """Re-hash every recorded artifact; list files on disk that no row records."""
        with self.session() as s:
            rows = [_artifact(a) for a in s.scalars(select(Artifact).order_by(Artifact.id))]
        checked = [{"path": a.path, "kind": a.kind, "status": self.artifacts.check(a.path, a.sha256, a.size)}
                   for a in rows]
        recorded = {a.path for a in rows}
        orphans = [p for p in self.artifacts.files() if p not in recorded]
        return {
            "checked": len(checked),
            "ok": sum(c["status"] == "ok" for c in checked),
            "problems": [c for c in checked if c["status"] != "ok"],
            "unrecorded_files": orphans,
            "quarantined_files": self.artifacts.quarantined(),
            "stale_temp_files": [p.name for p in self.artifacts.stale_temp_files()],
        }
