"""resumable uploads: a tus upload's length, plan inputs and PATCH lease

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

A resumable upload (contract 6.5, the tus protocol at /api/v1/uploads) lives across many
requests, and across coordinator restarts: its template_upload row stays ``uploading``,
and this table keeps what the row does not (coordinator/resumable.py).
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db.types import UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resumable_upload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_length", sa.BigInteger(), nullable=False),
        sa.Column("sync_node_ids", sa.Text(), nullable=False),
        sa.Column("auto_sync", sa.Boolean(), nullable=False),
        sa.Column("rollout", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["template_upload.id"], name=op.f("fk_resumable_upload_id_template_upload")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resumable_upload")),
    )


def downgrade() -> None:
    op.drop_table("resumable_upload")
