"""job rows count their handler's unexpected errors in a row, for the engine's limits

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db.types import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JOB_TABLES = ("template_deletion", "template_upload", "template_sync_task")


def upgrade() -> None:
    for table in JOB_TABLES:
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
            batch_op.add_column(
                sa.Column("unexpected_errors", sa.Integer(), nullable=False, server_default="0")
            )
            batch_op.add_column(sa.Column("first_error_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    for table in JOB_TABLES:
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
            batch_op.drop_column("first_error_at")
            batch_op.drop_column("unexpected_errors")
