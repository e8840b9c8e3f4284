"""versions: each upload is a version of its template; instances, sync tasks and clones name theirs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Every row there is becomes version 1 (a template had one upload until now; should one have
more, they are numbered in the order they were made) and every template's current version
is 1; a version has its own ``description``. The unique keys that said "one per template
and node" now say "one per template, version and node": instances, and the active sync
task per target. Sync tasks also count ``bytes_sent`` (crossed the network) and
``bytes_reused`` (the target had them already).

SQLite rebuilds a table to change a unique key (batch mode), and drops the table's
triggers with it: the sync-task count triggers are made again after the rebuild
(coordinator/db/sync_task_counts.py). MariaDB alters the tables in place.
"""

import sqlalchemy as sa
from alembic import op

from coordinator.db import sync_task_counts

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _version_column() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("version", sa.Integer(), nullable=False, server_default="1")


def _number_uploads() -> None:
    """Uploads of one template numbered 1, 2, ... by id (one each before versions existed)."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, template_id FROM template_upload WHERE template_id IS NOT NULL ORDER BY id")
    ).all()
    seen: dict[int, int] = {}
    for upload_id, template_id in rows:
        seen[template_id] = seen.get(template_id, 0) + 1
        if seen[template_id] > 1:
            conn.execute(
                sa.text("UPDATE template_upload SET version = :v WHERE id = :id"),
                {"v": seen[template_id], "id": upload_id},
            )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    autoinc = {"sqlite_autoincrement": True}
    with op.batch_alter_table("vm_template", table_kwargs=autoinc) as batch_op:
        batch_op.add_column(sa.Column("current_version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("template_upload", table_kwargs=autoinc) as batch_op:
        batch_op.add_column(_version_column())
        # MariaDB gives a TEXT column no literal default: NULL first, then ''.
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))
    op.execute("UPDATE template_upload SET description = ''")
    with op.batch_alter_table("template_upload", table_kwargs=autoinc) as batch_op:
        batch_op.alter_column("description", existing_type=sa.Text(), nullable=False)
    _number_uploads()
    with op.batch_alter_table("template_upload", table_kwargs=autoinc) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_template_upload_template_id_version"), ["template_id", "version"]
        )
    with op.batch_alter_table("template_instance", table_kwargs=autoinc) as batch_op:
        batch_op.add_column(_version_column())
        batch_op.drop_constraint("uq_template_instance_template_id_node_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_template_instance_template_id_version_node_id"),
            ["template_id", "version", "node_id"],
        )
    with op.batch_alter_table("template_sync_task", table_kwargs=autoinc) as batch_op:
        batch_op.add_column(_version_column())
        batch_op.add_column(sa.Column("bytes_sent", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("bytes_reused", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.drop_constraint("uq_template_sync_task_template_id_active_key", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_template_sync_task_template_id_version_active_key"),
            ["template_id", "version", "active_key"],
        )
    # Until now a task's bytes all crossed the network.
    op.execute("UPDATE template_sync_task SET bytes_sent = bytes_done")
    if sqlite:  # the rebuild took the count triggers with the old table
        for ddl in sync_task_counts.drop_ddl() + sync_task_counts.trigger_ddl("sqlite"):
            op.execute(ddl)
    op.create_index("ix_clones_template_version", "clones", ["template_id", "version"], unique=False)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    autoinc = {"sqlite_autoincrement": True}
    op.drop_index("ix_clones_template_version", table_name="clones")
    # Only version 1 fits the old keys: later versions' rows go (their VMs stay in PVE).
    op.execute("DELETE FROM template_sync_task WHERE version <> 1")
    op.execute("DELETE FROM template_instance WHERE version <> 1")
    op.execute("UPDATE template_upload SET template_id = NULL WHERE version <> 1")
    with op.batch_alter_table("template_sync_task", table_kwargs=autoinc) as batch_op:
        batch_op.drop_constraint("uq_template_sync_task_template_id_version_active_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_template_sync_task_template_id_active_key", ["template_id", "active_key"]
        )
        batch_op.drop_column("bytes_reused")
        batch_op.drop_column("bytes_sent")
        batch_op.drop_column("version")
    with op.batch_alter_table("template_instance", table_kwargs=autoinc) as batch_op:
        batch_op.drop_constraint("uq_template_instance_template_id_version_node_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_template_instance_template_id_node_id", ["template_id", "node_id"]
        )
        batch_op.drop_column("version")
    with op.batch_alter_table("template_upload", table_kwargs=autoinc) as batch_op:
        batch_op.drop_constraint("uq_template_upload_template_id_version", type_="unique")
        batch_op.drop_column("description")
        batch_op.drop_column("version")
    with op.batch_alter_table("vm_template", table_kwargs=autoinc) as batch_op:
        batch_op.drop_column("current_version")
    if sqlite:
        for ddl in sync_task_counts.drop_ddl() + sync_task_counts.trigger_ddl("sqlite"):
            op.execute(ddl)
