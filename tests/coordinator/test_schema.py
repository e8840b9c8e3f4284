"""The migrations build exactly the schema the models describe, and the service knows its head."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from coordinator.db.migrate import SCHEMA_HEAD, alembic_config, head_revision, upgrade_to_head
from coordinator.db.models import Base


def test_the_service_expects_alembics_head() -> None:
    assert SCHEMA_HEAD == head_revision()


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = tmp_path / "schema.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{db}")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff


def test_no_table_gives_an_id_twice_on_sqlite(tmp_path: Path) -> None:
    """Every table that makes its own ids is AUTOINCREMENT (a table that another migration adds
    without it fails here); one whose id is another row's (a foreign key) makes none."""
    db = tmp_path / "ids.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{db}")
    with sqlite3.connect(db) as conn:
        ddl = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    makes_ids = [
        name
        for name, table in Base.metadata.tables.items()
        if not all(column.foreign_keys for column in table.primary_key.columns)
    ]
    plain = [name for name in makes_ids if "AUTOINCREMENT" not in ddl[name]]
    assert "resumable_upload" not in makes_ids and "template_upload" in makes_ids
    assert plain == [], f"tables that reuse the id of a deleted last row: {plain}"


def test_the_upgrade_to_autoincrement_keeps_every_row_and_link(tmp_path: Path) -> None:
    db = tmp_path / "upgrade.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{db}"), "0002")
    now = "2026-11-30 22:00:00.000000"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO pve_cluster (id, cluster_name, api_url, token_id, token_secret, verify_ssl,"
            " pve_version, creator, modifier, created_at, updated_at)"
            " VALUES (3, 'c', 'https://pve:8006', 't', 's', 1, '', '', '', ?, ?)",
            (now, now),
        )
        for node_id in (5, 9):  # node 9, the newest, is deleted before the upgrade
            conn.execute(
                "INSERT INTO pve_node (id, cluster_id, node_name, ip_address, status, created_at, updated_at)"
                " VALUES (?, 3, ?, '', 'online', ?, ?)",
                (node_id, f"n{node_id}", now, now),
            )
        conn.execute("DELETE FROM pve_node WHERE id = 9")
    upgrade_to_head(f"sqlite+aiosqlite:///{db}")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        assert conn.execute("SELECT id, cluster_id, node_name FROM pve_node").fetchall() == [(5, 3, "n5")]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("DELETE FROM pve_node WHERE id = 5")
        conn.execute(
            "INSERT INTO pve_node (cluster_id, node_name, ip_address, status, created_at, updated_at)"
            " VALUES (3, 'again', '', 'online', ?, ?)",
            (now, now),
        )
        # An id deleted after the upgrade never comes back.
        (new_id,) = conn.execute("SELECT id FROM pve_node").fetchone()
        assert new_id > 5


def _insert(conn: sqlite3.Connection, table: str, **values: object) -> int:
    """A row with ``values`` and a plain value in every other NOT NULL column."""
    now = "2026-11-30 22:00:00.000000"
    row: dict[str, object] = {}
    for _, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})").fetchall():
        if notnull and not pk and default is None:
            kind = kind.upper()
            row[name] = (
                now
                if "DATETIME" in kind or "TIMESTAMP" in kind
                else 0
                if "INT" in kind or "BOOL" in kind
                else ""
            )
    row.update(values)
    names = ", ".join(row)
    cursor = conn.execute(
        f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values())
    )
    return int(cursor.lastrowid or 0)


def test_the_upgrade_to_versions_makes_every_row_version_1(tmp_path: Path) -> None:
    """0010: a template's rows become its version 1 (current), a task's bytes all crossed the
    network, and the sync-task counts are still kept after SQLite rebuilt the table."""
    db = tmp_path / "versions.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{db}"), "0009")
    with sqlite3.connect(db) as conn:
        cluster = _insert(conn, "pve_cluster", cluster_name="c")
        template = _insert(conn, "vm_template", cluster_id=cluster, template_name="t", status="active")
        upload = _insert(conn, "template_upload", template_id=template, status="imported", file_name="t.raw")
        _insert(conn, "template_upload", template_id=None, status="failed", file_name="rejected.raw")
        for node in (1, 2):
            _insert(
                conn,
                "template_instance",
                template_id=template,
                upload_id=upload,
                node_id=node,
                status="available",
            )
        _insert(
            conn,
            "template_sync_task",
            uid="a" * 32,
            template_id=template,
            upload_id=upload,
            target_node_id=2,
            status="completed",
            bytes_total=100,
            bytes_done=100,
        )
    upgrade_to_head(f"sqlite+aiosqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT current_version FROM vm_template").fetchall() == [(1,)]
        assert conn.execute("SELECT version, description FROM template_upload ORDER BY id").fetchall() == [
            (1, ""),
            (1, ""),
        ]
        assert conn.execute("SELECT DISTINCT version FROM template_instance").fetchall() == [(1,)]
        assert conn.execute(
            "SELECT version, bytes_sent, bytes_reused FROM template_sync_task"
        ).fetchall() == [(1, 100, 0)]
        # Version 2 of the template may now be on the same nodes, with a copy to the same target.
        _insert(
            conn, "template_upload", template_id=template, version=2, status="imported", file_name="t2.raw"
        )
        _insert(
            conn,
            "template_instance",
            template_id=template,
            version=2,
            upload_id=upload,
            node_id=2,
            status="pending",
        )
        _insert(
            conn,
            "template_sync_task",
            uid="b" * 32,
            template_id=template,
            version=2,
            upload_id=upload,
            target_node_id=2,
            active_key=2,
            status="pending",
        )
        with pytest.raises(sqlite3.IntegrityError):
            _insert(conn, "template_upload", template_id=template, version=2, status="failed", file_name="x")
        counts = dict(conn.execute("SELECT status, tasks FROM sync_task_count").fetchall())
    assert counts == {"completed": 1, "pending": 1}
