"""sync tasks get a uid that agents key their receives by (ids can be reused)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("template_sync_task", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(sa.Column("uid", sa.String(length=32), nullable=True))
    # Existing tasks get the uid an agent gives a receive saved before it knew uids (the
    # task id in 32 hex digits): a copy in flight across the upgrade is still found.
    conn = op.get_bind()
    task = sa.table("template_sync_task", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    for (task_id,) in conn.execute(sa.select(task.c.id)).all():
        conn.execute(sa.update(task).where(task.c.id == task_id).values(uid=f"{task_id:032x}"))
    with op.batch_alter_table("template_sync_task", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column("uid", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_template_sync_task_uid"), ["uid"])


def downgrade() -> None:
    with op.batch_alter_table("template_sync_task", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_template_sync_task_uid"), type_="unique")
        batch_op.drop_column("uid")
