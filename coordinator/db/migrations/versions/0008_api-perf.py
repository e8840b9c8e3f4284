"""sync-task counts kept by triggers (the list's exact total), indexes for the filtered lists

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db import sync_task_counts

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_task_count",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tasks", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_task_count")),
        sa.UniqueConstraint("template_id", "status", name=op.f("uq_sync_task_count_template_id_status")),
        sqlite_autoincrement=True,  # as every table since 0003: an id is never given twice
    )
    op.create_index(
        op.f("ix_template_sync_task_template_status_id"),
        "template_sync_task",
        ["template_id", "status", "id"],
    )
    op.create_index(op.f("ix_template_sync_task_status_id"), "template_sync_task", ["status", "id"])
    # Counted once here (tables locked by the migration's transaction on SQLite; on MariaDB run
    # it with the coordinators stopped, as every migration), kept by the triggers from now on.
    op.execute(sync_task_counts.RECOUNT)
    for ddl in sync_task_counts.trigger_ddl(op.get_bind().dialect.name):
        op.execute(ddl)


def downgrade() -> None:
    for ddl in sync_task_counts.drop_ddl():
        op.execute(ddl)
    op.drop_index(op.f("ix_template_sync_task_status_id"), table_name="template_sync_task")
    op.drop_index(op.f("ix_template_sync_task_template_status_id"), table_name="template_sync_task")
    op.drop_table("sync_task_count")
