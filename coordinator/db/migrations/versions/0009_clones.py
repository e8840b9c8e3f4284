"""clones: VMs cloned from templates (issue 13), durable jobs while under way

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("source_node_id", sa.Integer(), nullable=False),
        sa.Column("source_node_name", sa.String(length=100), nullable=False),
        sa.Column("source_vmid", sa.Integer(), nullable=True),
        sa.Column("storage_name", sa.String(length=100), nullable=False),
        sa.Column("vmid", sa.Integer(), nullable=True),
        sa.Column("vmid_key", sa.Integer(), nullable=True),
        sa.Column("vmid_given", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("requested_full", sa.Boolean(), nullable=True),
        sa.Column("target_storage", sa.String(length=100), nullable=True),
        sa.Column("vm_config", sa.Text(), nullable=False),
        sa.Column("image_size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("sync_task_id", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("unexpected_errors", sa.Integer(), nullable=False),
        sa.Column("first_error_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"], ["vm_template.id"], name=op.f("fk_clones_template_id_vm_template")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clones")),
        # Two clones in flight never hold the same VMID, whichever replica chose it.
        sa.UniqueConstraint("cluster_id", "vmid_key", name=op.f("uq_clones_cluster_id_vmid_key")),
        sqlite_autoincrement=True,  # as every table since 0003: an id is never given twice
    )
    op.create_index("ix_clones_status_next", "clones", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_clones_template_status_id", "clones", ["template_id", "status", "id"], unique=False)
    op.create_index("ix_clones_node_status_id", "clones", ["node_id", "status", "id"], unique=False)
    op.create_index("ix_clones_status_id", "clones", ["status", "id"], unique=False)


def downgrade() -> None:
    for index in ("ix_clones_status_id", "ix_clones_node_status_id", "ix_clones_template_status_id"):
        op.drop_index(index, table_name="clones")
    op.drop_index("ix_clones_status_next", table_name="clones")
    op.drop_table("clones")
