"""Rows of the database as the events a subscriber sees (shared/messages/events.py).

Each function takes a row of the columns the reader selects (coordinator/events/reader.py,
named as the model's) and gives its Event; which statuses are "active" (an object still
under way, sent in a connection's first state) is the states modules' word.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from coordinator.states import clone as clone_states
from coordinator.states import sync_task as sync_states
from coordinator.states import upload as upload_states
from shared.messages.events import Event, EventKind

UPLOAD_ACTIVE = frozenset((upload_states.S.UPLOADING, *upload_states.IMPORT_QUEUE))
SYNC_ACTIVE = frozenset(sync_states.ACTIVE)
CLONE_ACTIVE = frozenset(clone_states.ACTIVE)
_RUNNING = frozenset(sync_states.RUNNING)


def is_active(event: Event) -> bool:
    if event.kind == "upload":
        return event.status in UPLOAD_ACTIVE
    if event.kind == "sync_task":
        return event.status in SYNC_ACTIVE
    if event.kind == "clone":
        return event.status in CLONE_ACTIVE
    return event.counts is not None and any(event.counts.get(s, 0) for s in SYNC_ACTIVE)


def _object(kind: EventKind, row: Any, progress: int, done: int = 0, total: int = 0, **extra: Any) -> Event:
    """The event of one object's row: what every kind's row has, its progress and bytes, and
    ``extra`` (the fields only some kinds have)."""
    extra.setdefault("rate_bytes_per_sec", 0)
    return Event(
        kind, row.id, row.template_id, row.status, progress, done, total,
        error_message=row.error_message, at=row.updated_at, version=row.version, **extra,
    )  # fmt: skip


def upload_event(row: Any) -> Event:
    """While it streams, an upload's bytes are those received so far out of the request's
    length (coordinator/upload_progress.py; 0 when it came chunked), its rate their average
    since it began; once stored, its file's, and its progress the import's."""
    if row.status != upload_states.S.UPLOADING:
        return _object(
            "upload", row, row.import_progress, row.file_size, row.file_size, node_id=row.import_node_id
        )
    done, total = row.received_bytes, row.expected_bytes
    progress = min(99, done * 100 // total) if total else 0
    elapsed = (row.updated_at - row.created_at).total_seconds()
    rate = int(done / elapsed) if done and elapsed > 0 else 0
    return _object("upload", row, progress, done, total, node_id=row.import_node_id, rate_bytes_per_sec=rate)


def sync_task_event(row: Any) -> Event:
    # a rate is only a rate while bytes move
    rate = row.rate_bytes_per_sec if row.status == sync_states.S.SYNCING else 0
    return _object(
        "sync_task", row, row.progress, row.bytes_done, row.bytes_total, rate_bytes_per_sec=rate,
        node_id=row.target_node_id, bytes_sent=row.bytes_sent, bytes_reused=row.bytes_reused,
    )  # fmt: skip


def clone_event(row: Any) -> Event:
    return _object("clone", row, row.progress, node_id=row.node_id)


def version_status(counts: dict[str, int]) -> str:
    """A rollout's status from its sync tasks': under way while any is (``pending`` while
    none has started), else ``failed`` if any failed, ``completed`` if any completed."""
    if any(counts.get(s, 0) for s in SYNC_ACTIVE):
        started = any(n for status, n in counts.items() if status != sync_states.S.PENDING)
        return str(sync_states.S.SYNCING if started else sync_states.S.PENDING)
    for final in (sync_states.S.FAILED, sync_states.S.COMPLETED):
        if counts.get(final, 0):
            return str(final)
    return str(sync_states.S.CANCELED)


def version_event(template_id: int, version: int, rows: Iterable[Any]) -> Event:
    """One version's rollout from its sync tasks grouped by status (columns ``upload_id``,
    ``status``, ``n``, ``progress``, ``bytes_done``, ``bytes_total``, ``rate``, ``at``: the
    group's count, sums and latest change)."""
    counts: dict[str, int] = {}
    upload_id = progress = done = total = rate = 0
    at: datetime | None = None
    failed = 0
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + int(row.n)
        upload_id = upload_id or row.upload_id
        progress += int(row.progress or 0)
        done += int(row.bytes_done or 0)
        total += int(row.bytes_total or 0)
        if row.status == sync_states.S.SYNCING:
            rate += int(row.rate or 0)
        if row.status == sync_states.S.FAILED:
            failed += int(row.n)
        at = row.at if at is None or (row.at is not None and row.at > at) else at
    tasks = sum(counts.values())
    assert at is not None, "a version event needs at least one sync task"
    return Event(
        kind="version",
        id=upload_id,
        template_id=template_id,
        status=version_status(counts),
        progress=progress // tasks if tasks else 0,
        bytes_done=done,
        bytes_total=total,
        rate_bytes_per_sec=rate,
        error_message=f"{failed} of {tasks} sync tasks failed" if failed else None,
        at=at,
        version=version,
        counts=dict(sorted(counts.items())),
    )


Key = tuple[EventKind, int]


def key_of(event: Event) -> Key:
    return (event.kind, event.id)


def signature(event: Event) -> tuple[Any, ...]:
    """What a subscriber would notice: an event equal in these is not sent again (a row is
    rewritten with the same values, e.g. a job's lease renewed, and is read again)."""
    return (
        event.status,
        event.progress,
        event.bytes_done,
        event.bytes_total,
        event.rate_bytes_per_sec,
        event.error_message,
        event.bytes_sent,
        event.bytes_reused,
        None if event.counts is None else tuple(event.counts.items()),
    )
