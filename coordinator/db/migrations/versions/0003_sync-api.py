"""every table AUTOINCREMENT on SQLite: an id is never given twice; sync tasks count manual retries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

SQLite can only make a table AUTOINCREMENT by rebuilding it (batch mode: copy, drop,
rename; env.py turns foreign keys off meanwhile). The copy keeps every id, and
sqlite_sequence starts at the highest id present: an id deleted before this upgrade from
the top of a table can still come back once, never again after. MariaDB needs nothing
(InnoDB does not reuse ids, see models.py).

template_sync_task.attempts_before_retry: `attempts` goes on counting across a manual
retry, and the automatic attempts' limit counts from there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = (
    "api_token",
    "pve_cluster",
    "pve_node",
    "pve_storage",
    "agent",
    "agent_identity",
    "vm_template",
    "template_upload",
    "template_instance",
    "template_sync_task",
)


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    with op.batch_alter_table("template_sync_task") as batch_op:
        batch_op.add_column(sa.Column("attempts_before_retry", sa.Integer(), nullable=True))
    # Until now a manual retry set attempts back to 0: every attempt counted is since the last one.
    op.execute("UPDATE template_sync_task SET attempts_before_retry = 0")
    with op.batch_alter_table("template_sync_task") as batch_op:
        batch_op.alter_column("attempts_before_retry", existing_type=sa.Integer(), nullable=False)
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
    op.execute("UPDATE template_sync_task SET attempts = attempts - attempts_before_retry")
    with op.batch_alter_table("template_sync_task") as batch_op:
        batch_op.drop_column("attempts_before_retry")
