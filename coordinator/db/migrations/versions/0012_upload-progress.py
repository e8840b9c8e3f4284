"""upload progress: the bytes an upload has received while it streams

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

An upload's row said nothing of its bytes until the file was stored, so nobody but the
uploader could watch an upload (Docker's complaint about pulls). The streaming coordinator
now writes ``received_bytes`` about once a second (coordinator/upload_progress.py), beside
``expected_bytes``, the request's length (0 when it came chunked), for live events.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: SQLite need not copy the table (which would have
    # to keep its AUTOINCREMENT, as 0010 does).
    for name in ("received_bytes", "expected_bytes"):
        op.add_column("template_upload", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("template_upload", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("expected_bytes")
        batch.drop_column("received_bytes")
