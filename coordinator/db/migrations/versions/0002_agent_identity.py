"""per-node agent identities; the nodes that may ask for a sync task's tickets

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

import coordinator.db.types  # noqa: F401  (UtcDateTime columns)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("revoked_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("join_token_hash", sa.String(length=64), nullable=True),
        sa.Column("join_expires_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_identity")),
        sa.UniqueConstraint("join_token_hash", name=op.f("uq_agent_identity_join_token_hash")),
        sa.UniqueConstraint("node_name", name=op.f("uq_agent_identity_node_name")),
    )
    with op.batch_alter_table("template_sync_task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_nodes", sa.Text(), nullable=True))
    # A transfer running across the upgrade: its source may still ask for tickets.
    op.execute("UPDATE template_sync_task SET upstream_nodes = source_node_name")
    with op.batch_alter_table("template_sync_task", schema=None) as batch_op:
        batch_op.alter_column("upstream_nodes", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("template_sync_task", schema=None) as batch_op:
        batch_op.drop_column("upstream_nodes")
    op.drop_table("agent_identity")
