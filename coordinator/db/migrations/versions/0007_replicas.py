"""limit_slot: upload, import and sync-planning limits shared by every coordinator replica

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db.types import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limit_slot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=96), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_slot")),
        sa.UniqueConstraint("scope", "slot", name=op.f("uq_limit_slot_scope_slot")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_limit_slot_owner"), "limit_slot", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_limit_slot_owner"), table_name="limit_slot")
    op.drop_table("limit_slot")
