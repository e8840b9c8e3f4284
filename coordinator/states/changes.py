"""What a status write changed, said once it is committed: one log line per row that moved
(its kind, id, template, version, node, from -> to, error), and the same record handed to
the session's observers (coordinator/metrics.py times jobs with it).

Every status write is writes.move's conditional UPDATE, so this is the one place that
sees them all. Before the UPDATE, ``rows_about_to_move`` reads the rows it will move (their
ids, old status and the subject's fields: MariaDB's UPDATE has no RETURNING); the records
wait in ``session.info`` and leave after the commit (a rolled-back write said nothing).
The read is by the same conditions as the UPDATE, on indexed columns: an id, or a
template's rows in one status; it costs 0.3 ms a change on SQLite (measured with one row,
2000 reads, a loaded machine), and an upload or a sync task makes three or four changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, Session, SessionTransaction

from coordinator.db.models import (
    Clone,
    TemplateDeletion,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from shared.log import fields

log = logging.getLogger("coordinator.states")

# session.info keys: the records waiting for the commit, and who hears of them.
PENDING = "pvesphere_state_changes"
OBSERVERS = "pvesphere_state_observers"


@dataclass(frozen=True)
class StateChange:
    kind: str  # upload (a version), sync_task, clone, deletion, template, instance
    id: int
    old: str
    new: str
    template_id: int | None
    version: int | None
    node: str | None
    error: str | None
    # When the work the change may end began (an upload's creation, a sync task's first
    # attempt, a clone's request, a cascade delete's start): what a job's duration counts from.
    since: datetime | None


Observer = Callable[[StateChange], None]


@dataclass(frozen=True)
class _Subject:
    kind: str
    template_id: InstrumentedAttribute[Any] | None
    version: InstrumentedAttribute[Any] | None
    node: InstrumentedAttribute[Any] | None
    since: InstrumentedAttribute[Any] | None
    error: str | None  # the value written with the status that says why
    level: int = logging.INFO


_SUBJECTS: dict[str, _Subject] = {
    "template_upload": _Subject(
        "upload",
        TemplateUpload.template_id,
        TemplateUpload.version,
        TemplateUpload.import_node_name,
        TemplateUpload.created_at,
        "error_message",
    ),
    "template_sync_task": _Subject(
        "sync_task",
        TemplateSyncTask.template_id,
        TemplateSyncTask.version,
        TemplateSyncTask.target_node_name,
        TemplateSyncTask.sync_start_time,
        "error_message",
    ),
    "clones": _Subject(
        "clone", Clone.template_id, Clone.version, Clone.node_name, Clone.created_at, "error_message"
    ),
    "template_deletion": _Subject(
        "deletion", TemplateDeletion.template_id, None, None, TemplateDeletion.started_at, "reason"
    ),
    "vm_template": _Subject("template", VmTemplate.id, VmTemplate.current_version, None, None, None),
    # An instance follows its sync task or import (said there already): debug only.
    "template_instance": _Subject(
        "instance",
        TemplateInstance.template_id,
        TemplateInstance.version,
        TemplateInstance.node_name,
        None,
        None,
        logging.DEBUG,
    ),
}


async def rows_about_to_move(
    session: AsyncSession,
    model: Any,
    where: Sequence[ColumnElement[bool]],
    sources: Sequence[str],
    new: str,
    values: dict[str, Any],
) -> list[StateChange]:
    """The records of the rows the UPDATE about to run would move to ``new``."""
    subject = _SUBJECTS.get(model.__tablename__)
    if subject is None or (subject.level < logging.INFO and not log.isEnabledFor(subject.level)):
        return []  # (an instance's change, not logged: observers hear only the others')
    columns = [subject.template_id, subject.version, subject.node, subject.since]
    stmt = select(model.id, model.status, *[c for c in columns if c is not None])
    rows = (await session.execute(stmt.where(*where, model.status.in_(sources)))).all()
    error = values.get(subject.error) if subject.error else None
    return [
        StateChange(
            subject.kind,
            row[0],
            row[1],
            new,
            error=error if isinstance(error, str) else None,
            **dict(zip(["template_id", "version", "node", "since"], _pick(row[2:], columns), strict=True)),
        )
        for row in rows
    ]


def _pick(values: Sequence[Any], columns: list[Any]) -> list[Any]:
    """The row's values laid out by ``columns``, None where the subject has no such column."""
    found = iter(values)
    return [None if column is None else next(found) for column in columns]


async def moved(session: AsyncSession, model: Any, changes: list[StateChange], count: int) -> None:
    """``count`` rows moved: their records wait for the commit. Fewer than were read (another
    writer came first, between the read and the UPDATE): those now in the new status."""
    if count != len(changes) and changes:
        now_there = await session.scalars(
            select(model.id).where(model.id.in_([c.id for c in changes]), model.status == changes[0].new)
        )
        kept = set(now_there)
        changes = [c for c in changes if c.id in kept]
    if changes:
        session.info.setdefault(PENDING, []).extend(changes)


def say(change: StateChange) -> None:
    """The change's log line: ``upload 7: uploading -> uploaded`` with its ids as fields."""
    level = next((s.level for s in _SUBJECTS.values() if s.kind == change.kind), logging.INFO)
    if change.new == "failed" and level == logging.INFO:
        level = logging.WARNING
    log.log(
        level,
        "%s %s: %s -> %s%s",
        change.kind,
        change.id,
        change.old,
        change.new,
        f" ({change.error})" if change.error else "",
        extra=fields(
            entity=change.kind,
            id=change.id,
            template_id=change.template_id,
            version=change.version,
            node=change.node,
            **{"from": change.old, "to": change.new},
            error=change.error,
        ),
    )


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    changes: list[StateChange] = session.info.pop(PENDING, [])
    observers: list[Observer] = session.info.get(OBSERVERS, [])
    for change in changes:
        say(change)
        for observe in observers:
            try:
                observe(change)
            except Exception:  # an observer's bug must not fail the write that was made
                log.exception("state change observer failed on %s %s", change.kind, change.id)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: rolled back, or committed (said already)
        session.info.pop(PENDING, None)
