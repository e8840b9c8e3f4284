"""The database side of events: a connection's first state, and the rows changed since a time.

Reads through SQLAlchemy Core on the engine, not the API's fast reads: the watermark needs
``updated_at`` to the microsecond, which those round to whole seconds. A poll is three range
reads on the ``updated_at`` indexes (migration 0011) and, when sync tasks changed, one
grouped read of their versions' tasks. Measured on SQLite with 1M sync tasks (none
changed lately; the machine's 2 cores shared): a poll 1.1-2.7 ms (median) with the
indexes, 247 ms without (a scan of the table); a connection's first state 2.5 ms (the
active tasks found through the status index).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.db.fast_reads import AnySelect
from coordinator.db.models import Clone, TemplateSyncTask, TemplateUpload
from coordinator.events import shaping
from coordinator.events.filters import EventFilter
from shared.messages.events import Event

T, U, C = TemplateSyncTask, TemplateUpload, Clone
UPLOAD_COLUMNS = (
    U.id, U.template_id, U.version, U.status, U.import_progress, U.file_size,
    U.received_bytes, U.expected_bytes, U.error_message, U.import_node_id, U.created_at,
    U.updated_at,
)  # fmt: skip
SYNC_COLUMNS = (
    T.id, T.template_id, T.version, T.status, T.progress, T.bytes_done, T.bytes_total,
    T.rate_bytes_per_sec, T.error_message, T.target_node_id, T.bytes_sent, T.bytes_reused,
    T.updated_at,
)  # fmt: skip
CLONE_COLUMNS = (
    C.id,
    C.template_id,
    C.version,
    C.status,
    C.progress,
    C.error_message,
    C.node_id,
    C.updated_at,
)


def _version_groups(template_ids: Iterable[int]) -> AnySelect:
    return (
        select(
            T.template_id,
            T.version,
            T.status,
            func.min(T.upload_id).label("upload_id"),
            func.count().label("n"),
            func.sum(T.progress).label("progress"),
            func.sum(T.bytes_done).label("bytes_done"),
            func.sum(T.bytes_total).label("bytes_total"),
            func.sum(T.rate_bytes_per_sec).label("rate"),
            func.max(T.updated_at).label("at"),
        )
        .where(T.template_id.in_(sorted(set(template_ids))))
        .group_by(T.template_id, T.version, T.status)
    )


async def versions(conn: AsyncConnection, wanted: set[tuple[int, int]]) -> list[Event]:
    """The rollout event of each (template_id, version) in ``wanted``."""
    if not wanted:
        return []
    groups: dict[tuple[int, int], list[Any]] = {}
    for row in await conn.execute(_version_groups(t for t, _ in wanted)):
        if (row.template_id, row.version) in wanted:
            groups.setdefault((row.template_id, row.version), []).append(row)
    return [shaping.version_event(t, v, rows) for (t, v), rows in sorted(groups.items())]


async def snapshot(conn: AsyncConnection, wanted: EventFilter) -> list[Event]:
    """The current state of every active object ``wanted`` matches (what a connection gets first)."""
    events: list[Event] = []

    def narrowed(stmt: AnySelect, table: Any) -> AnySelect:
        if wanted.template_id is not None:
            stmt = stmt.where(table.template_id == wanted.template_id)
        return stmt

    if wanted.wants("upload"):
        stmt = narrowed(select(*UPLOAD_COLUMNS).where(U.status.in_(shaping.UPLOAD_ACTIVE)), U)
        events += map(shaping.upload_event, await conn.execute(stmt.order_by(U.id)))
    if wanted.wants("sync_task") or wanted.wants("version"):
        stmt = narrowed(select(*SYNC_COLUMNS).where(T.status.in_(shaping.SYNC_ACTIVE)), T)
        tasks = [shaping.sync_task_event(row) for row in await conn.execute(stmt.order_by(T.id))]
        if wanted.wants("sync_task"):
            events += tasks
        if wanted.wants("version"):
            events += await versions(conn, {(e.template_id or 0, e.version or 0) for e in tasks})
    if wanted.wants("clone"):
        stmt = narrowed(select(*CLONE_COLUMNS).where(C.status.in_(shaping.CLONE_ACTIVE)), C)
        events += map(shaping.clone_event, await conn.execute(stmt.order_by(C.id)))
    return [e for e in events if wanted.matches(e)]


async def changed_since(conn: AsyncConnection, since: datetime) -> list[Event]:
    """Every object whose row changed at or after ``since`` (oldest first per kind), and the
    rollout of every version one of whose sync tasks did."""
    events: list[Event] = []
    for columns, table, shape in (
        (UPLOAD_COLUMNS, U, shaping.upload_event),
        (SYNC_COLUMNS, T, shaping.sync_task_event),
        (CLONE_COLUMNS, C, shaping.clone_event),
    ):
        stmt = select(*columns).where(table.updated_at >= since).order_by(table.updated_at)
        events += map(shape, await conn.execute(stmt))
    touched = {(e.template_id or 0, e.version or 0) for e in events if e.kind == "sync_task"}
    return events + await versions(conn, touched)
