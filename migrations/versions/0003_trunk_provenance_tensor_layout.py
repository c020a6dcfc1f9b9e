"""Trunks record where their weights came from (source, sha256, library and version, the pretrained
preprocessing config); domain versions record the tensor layout their artifact uses, so artifacts
written before trunks became modules (layout 1) are renamed on load instead of misloaded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trunks") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("domain_versions") as batch:
        batch.add_column(sa.Column("layout", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("domain_versions") as batch:
        batch.drop_column("layout")
    with op.batch_alter_table("trunks") as batch:
        batch.drop_column("provenance")
