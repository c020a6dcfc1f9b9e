"""Domains get a pinned version (`mdl promote NAME --version N`): rolling back no longer means removing
the newer versions. NULL (every existing domain) keeps the old rule: the newest version not removed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("pinned_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("pinned_version")
