"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

import coordinator.db.types  # noqa: F401  (UtcDateTime columns)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("last_used_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("revoked_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("name", name=op.f("uq_api_token_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )
    op.create_table(
        "pve_cluster",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_name", sa.String(length=100), nullable=False),
        sa.Column("api_url", sa.String(length=255), nullable=False),
        sa.Column("token_id", sa.String(length=255), nullable=False),
        sa.Column("token_secret", sa.String(length=255), nullable=False),
        sa.Column("verify_ssl", sa.Boolean(), nullable=False),
        sa.Column("pve_version", sa.String(length=50), nullable=False),
        sa.Column("last_sync_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_sync_error", sa.Text(), nullable=True),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("modifier", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pve_cluster")),
        sa.UniqueConstraint("cluster_name", name=op.f("uq_pve_cluster_cluster_name")),
    )
    op.create_table(
        "pve_node",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_sync_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["pve_cluster.id"],
            name=op.f("fk_pve_node_cluster_id_pve_cluster"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pve_node")),
        sa.UniqueConstraint("cluster_id", "node_name", name=op.f("uq_pve_node_cluster_id_node_name")),
    )
    op.create_table(
        "vm_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("template_name", sa.String(length=128), nullable=False),
        sa.Column("name_key", coordinator.db.types.exact_string(128), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("deleted_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("modifier", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["pve_cluster.id"], name=op.f("fk_vm_template_cluster_id_pve_cluster")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_template")),
        sa.UniqueConstraint("cluster_id", "name_key", name=op.f("uq_vm_template_cluster_id_name_key")),
    )
    with op.batch_alter_table("vm_template", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_template_cluster_id"), ["cluster_id"], unique=False)

    op.create_table(
        "agent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_name", sa.String(length=100), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("started_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_heartbeat_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("stopped_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("pve_ok", sa.Boolean(), nullable=False),
        sa.Column("pve_error", sa.Text(), nullable=True),
        sa.Column("staging_free_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["pve_node.id"], name=op.f("fk_agent_node_id_pve_node"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent")),
        sa.UniqueConstraint("cluster_name", "node_name", name=op.f("uq_agent_cluster_name_node_name")),
    )
    op.create_table(
        "pve_storage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("storage_name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.String(length=255), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("avail", sa.BigInteger(), nullable=False),
        sa.Column("last_sync_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["pve_cluster.id"],
            name=op.f("fk_pve_storage_cluster_id_pve_cluster"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["pve_node.id"], name=op.f("fk_pve_storage_node_id_pve_node"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pve_storage")),
        sa.UniqueConstraint("node_id", "storage_name", name=op.f("uq_pve_storage_node_id_storage_name")),
    )
    with op.batch_alter_table("pve_storage", schema=None) as batch_op:
        batch_op.create_index("ix_pve_storage_cluster_name", ["cluster_id", "storage_name"], unique=False)

    op.create_table(
        "template_instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("storage_id", sa.Integer(), nullable=False),
        sa.Column("storage_name", sa.String(length=100), nullable=False),
        sa.Column("is_shared", sa.Boolean(), nullable=False),
        sa.Column("vmid", sa.Integer(), nullable=True),
        sa.Column("volume_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sync_task_id", sa.Integer(), nullable=True),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("modifier", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"], ["vm_template.id"], name=op.f("fk_template_instance_template_id_vm_template")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_instance")),
        sa.UniqueConstraint("template_id", "node_id", name=op.f("uq_template_instance_template_id_node_id")),
    )
    with op.batch_alter_table("template_instance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_template_instance_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_instance_node_id"), ["node_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_instance_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_instance_sync_task_id"), ["sync_task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_instance_template_id"), ["template_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_instance_upload_id"), ["upload_id"], unique=False)

    op.create_table(
        "template_sync_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("source_node_id", sa.Integer(), nullable=False),
        sa.Column("source_node_name", sa.String(length=100), nullable=False),
        sa.Column("target_node_id", sa.Integer(), nullable=False),
        sa.Column("target_node_name", sa.String(length=100), nullable=False),
        sa.Column("storage_name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active_key", sa.Integer(), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("rate_bytes_per_sec", sa.BigInteger(), nullable=False),
        sa.Column("vmid", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("staged_name", sa.String(length=128), nullable=False),
        sa.Column("sync_start_time", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("sync_end_time", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("next_attempt_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"], ["vm_template.id"], name=op.f("fk_template_sync_task_template_id_vm_template")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_sync_task")),
        sa.UniqueConstraint(
            "template_id", "active_key", name=op.f("uq_template_sync_task_template_id_active_key")
        ),
    )
    with op.batch_alter_table("template_sync_task", schema=None) as batch_op:
        batch_op.create_index(
            "ix_template_sync_task_source_status", ["source_node_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_template_sync_task_status_next", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_template_sync_task_target_status", ["target_node_id", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_template_sync_task_template_id"), ["template_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_sync_task_upload_id"), ["upload_id"], unique=False)

    op.create_table(
        "template_upload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("template_name", sa.String(length=128), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("storage_id", sa.Integer(), nullable=False),
        sa.Column("storage_name", sa.String(length=100), nullable=False),
        sa.Column("storage_type", sa.String(length=32), nullable=False),
        sa.Column("is_shared", sa.Boolean(), nullable=False),
        sa.Column("import_node_id", sa.Integer(), nullable=False),
        sa.Column("import_node_name", sa.String(length=100), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("file_format", sa.String(length=16), nullable=False),
        sa.Column("virtual_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("staged_name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("import_progress", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("vmid", sa.Integer(), nullable=True),
        sa.Column("vm_config", sa.Text(), nullable=False),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("created_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", coordinator.db.types.UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("next_attempt_at", coordinator.db.types.UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"], ["vm_template.id"], name=op.f("fk_template_upload_template_id_vm_template")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_upload")),
    )
    with op.batch_alter_table("template_upload", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_template_upload_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index("ix_template_upload_status_next", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_upload_storage_id"), ["storage_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_template_upload_template_id"), ["template_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("template_upload", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_template_upload_template_id"))
        batch_op.drop_index(batch_op.f("ix_template_upload_storage_id"))
        batch_op.drop_index("ix_template_upload_status_next")
        batch_op.drop_index(batch_op.f("ix_template_upload_cluster_id"))

    op.drop_table("template_upload")
    with op.batch_alter_table("template_sync_task", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_template_sync_task_upload_id"))
        batch_op.drop_index(batch_op.f("ix_template_sync_task_template_id"))
        batch_op.drop_index("ix_template_sync_task_target_status")
        batch_op.drop_index("ix_template_sync_task_status_next")
        batch_op.drop_index("ix_template_sync_task_source_status")

    op.drop_table("template_sync_task")
    with op.batch_alter_table("template_instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_template_instance_upload_id"))
        batch_op.drop_index(batch_op.f("ix_template_instance_template_id"))
        batch_op.drop_index(batch_op.f("ix_template_instance_sync_task_id"))
        batch_op.drop_index(batch_op.f("ix_template_instance_status"))
        batch_op.drop_index(batch_op.f("ix_template_instance_node_id"))
        batch_op.drop_index(batch_op.f("ix_template_instance_cluster_id"))

    op.drop_table("template_instance")
    with op.batch_alter_table("pve_storage", schema=None) as batch_op:
        batch_op.drop_index("ix_pve_storage_cluster_name")

    op.drop_table("pve_storage")
    op.drop_table("agent")
    with op.batch_alter_table("vm_template", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_template_cluster_id"))

    op.drop_table("vm_template")
    op.drop_table("pve_node")
    op.drop_table("pve_cluster")
    op.drop_table("api_token")
