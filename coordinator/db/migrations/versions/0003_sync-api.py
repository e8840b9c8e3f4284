"""every table AUTOINCREMENT on SQLite: an id is never given twice

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

SQLite can only make a table AUTOINCREMENT by rebuilding it (batch mode: copy, drop,
rename; env.py turns foreign keys off meanwhile). The copy keeps every id, and
sqlite_sequence starts at the highest id present: an id deleted before this upgrade from
the top of a table can still come back once, never again after. MariaDB needs nothing
(InnoDB does not reuse ids, see models.py).
"""

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
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
