"""a template's status; cascade deletes as durable jobs (template_deletion)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

import coordinator.db.types  # noqa: F401  (UtcDateTime columns)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_deletion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("finished_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("remaining", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("next_attempt_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"], ["vm_template.id"], name=op.f("fk_template_deletion_template_id_vm_template")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_deletion")),
        sa.UniqueConstraint("template_id", name=op.f("uq_template_deletion_template_id")),
        sqlite_autoincrement=True,  # as every table since 0003: an id is never given twice
    )
    op.create_index(
        "ix_template_deletion_status_next", "template_deletion", ["status", "next_attempt_at"], unique=False
    )
    with op.batch_alter_table("vm_template", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE vm_template SET status = CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END"
    )
    # SQLite rebuilds the table for this: it stays AUTOINCREMENT (0003).
    with op.batch_alter_table("vm_template", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_template", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column("status")
    op.drop_index("ix_template_deletion_status_next", table_name="template_deletion")
    op.drop_table("template_deletion")
