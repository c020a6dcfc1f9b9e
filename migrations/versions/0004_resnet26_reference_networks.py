"""The ResNet-26 trunks now follow the papers' reference code (no ReLU after the stem, an end BN + ReLU
before pooling, a depthwise-separable stem for ``resnet26_dw``). Trunks registered before this revision
were built by the earlier definition; they keep it under the names ``resnet26_v0`` / ``resnet26_dw_v0``,
so their weights load into the network they were trained as.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RENAMED = {"resnet26": "resnet26_v0", "resnet26_dw": "resnet26_dw_v0"}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f"UPDATE trunks SET arch = '{new}' WHERE arch = '{old}'")


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f"UPDATE trunks SET arch = '{old}' WHERE arch = '{new}'")
