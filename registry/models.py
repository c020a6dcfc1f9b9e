"""SQLAlchemy 2 models of the registry. Schema changes go through an Alembic migration in `migrations/`.

Rows are never deleted: a removed trunk, domain version or gate gets `removed_at`, so version numbers
are never reused and history stays readable.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


TENSOR_LAYOUT = 2  # current artifact tensor naming (see DomainVersion.layout)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Artifact(Base):
    """A safetensors file in the store: where it is (relative to the home), how big, its sha256."""

    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # trunk | domain | gate
    path: Mapped[str] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Trunk(Base):
    """A pretrained shared network: architecture, width, and the source domain it learnt from."""

    __tablename__ = "trunks"
    __table_args__ = (UniqueConstraint("arch", "version", name="uq_trunks_arch_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    width: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(128))
    num_params: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # hyper-parameters, image size, metrics
    # where the weights came from: source, weights sha256, library + version, pretrained preprocessing config
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    removed_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)

    artifact: Mapped[Artifact] = relationship()


class Domain(Base):
    """A visual domain by name; its trained adapters are DomainVersions."""

    __tablename__ = "domains"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    removed_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    # Accuracy (0-100) that the decathlon score treats as this domain's baseline, for custom domains.
    reference_accuracy: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # `mdl promote NAME --version N`: the version every command serves as current (None: the newest not removed)
    pinned_version: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)

    versions: Mapped[list["DomainVersion"]] = relationship(
        back_populates="domain", order_by="DomainVersion.version"
    )


class DomainVersion(Base):
    """One trained adapter of a domain against one trunk, with its metrics and provenance."""

    __tablename__ = "domain_versions"
    __table_args__ = (UniqueConstraint("domain_id", "version", name="uq_domain_versions_domain_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"))
    version: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64))
    num_classes: Mapped[int] = mapped_column(Integer)
    domain_params: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # validation, 0-100
    trunk_id: Mapped[int] = mapped_column(ForeignKey("trunks.id"))
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    classes: Mapped[list[Any]] = mapped_column(default=list)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # source, fingerprint, mean/std, category ids
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # hyper-parameters and training metrics
    # tensor naming of the artifact: 1 = before trunks became modules (renamed on load), 2 = module paths
    layout: Mapped[int] = mapped_column(Integer, default=TENSOR_LAYOUT, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    removed_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)

    domain: Mapped[Domain] = relationship(back_populates="versions")
    trunk: Mapped[Trunk] = relationship()
    artifact: Mapped[Artifact] = relationship()


class Gate(Base):
    """Soft-sharing gate of a target domain version over an ordered list of domain versions."""

    __tablename__ = "gates"
    __table_args__ = (UniqueConstraint("domain_version_id", "version", name="uq_gates_target_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_version_id: Mapped[int] = mapped_column(ForeignKey("domain_versions.id"))
    version: Mapped[int] = mapped_column(Integer)
    placement: Mapped[str] = mapped_column(String(16))
    mixed: Mapped[list[Any]] = mapped_column(default=list)  # domain_versions ids, in gate order
    accuracy: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # validation with the gate
    base_accuracy: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # same split, without
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    removed_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)

    target: Mapped[DomainVersion] = relationship()
    artifact: Mapped[Artifact] = relationship()


class Evaluation(Base):
    """An accuracy measured on a split, for a domain version (optionally with a gate)."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_version_id: Mapped[int] = mapped_column(ForeignKey("domain_versions.id"))
    gate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("gates.id"), nullable=True)
    split: Mapped[str] = mapped_column(String(16))
    accuracy: Mapped[float] = mapped_column(Float)
    num_samples: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    domain_version: Mapped[DomainVersion] = relationship()
