"""A sync task's states (template_sync_task.status) and every write of one.

::

    pending   --claimed by the scheduler (its transfer chain starts)-->       syncing
    syncing   --the target verified the whole image-->                        importing
    importing --the target's VM is a template-->                              completed
    syncing/importing --the attempt failed--> pending (after a backoff), or failed
    syncing   --the transfer never started (source busy)--> pending, attempt not counted
    pending   --no node holds a copy to send any more-->                      failed
    failed/canceled --retried (API)-->                                        pending
    pending/syncing --canceled (API; pending ones when their template is deleted)--> canceled

A syncing or importing task is worked by one watcher holding its lease, and each attempt
has its own ``epoch`` (tickets name it): every write of a running task's status is
conditional on the epoch the writer holds, so a watcher whose attempt is over (taken
over, canceled, failed by another) changes nothing. ``active_key`` is the target node
while the task is active, NULL otherwise: the unique (template, active_key) key keeps one
active task per (template, node). The instance a task makes follows it
(coordinator/states/instance.py), in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateSyncTask
from coordinator.db.types import utcnow
from coordinator.states import instance
from coordinator.states.instance import InstanceStatus
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class SyncTaskStatus(StrEnum):
    PENDING = "pending"
    SYNCING = "syncing"
    IMPORTING = "importing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


# The API's name for the statuses (a Literal: its OpenAPI schema is an inline enum);
# tests/unit/test_states.py checks that it lists the same values.
SyncTaskStatusName = Literal["pending", "syncing", "importing", "completed", "failed", "canceled"]

S = SyncTaskStatus
# Holding the (template, target node) active_key: at most one such task per pair.
ACTIVE = (S.PENDING, S.SYNCING, S.IMPORTING)
# Worked by a watcher under the task's lease, in the attempt its epoch names.
RUNNING = (S.SYNCING, S.IMPORTING)
TRANSITIONS = Transitions[SyncTaskStatus](
    {
        S.PENDING: frozenset({S.SYNCING, S.FAILED, S.CANCELED}),
        S.SYNCING: frozenset({S.IMPORTING, S.PENDING, S.FAILED, S.CANCELED}),
        S.IMPORTING: frozenset({S.COMPLETED, S.PENDING, S.FAILED}),
        S.FAILED: frozenset({S.PENDING}),
        S.CANCELED: frozenset({S.PENDING}),
    }
)
# The instance's status while its task is in each of these.
INSTANCE = {
    S.PENDING: InstanceStatus.PENDING,
    S.SYNCING: InstanceStatus.SYNCING,
    S.IMPORTING: InstanceStatus.IMPORTING,
    S.COMPLETED: InstanceStatus.AVAILABLE,
    S.FAILED: InstanceStatus.FAILED,
}


def new_task(**fields: Any) -> TemplateSyncTask:
    """A pending task holding its (template, target node) active_key; the caller adds it."""
    return TemplateSyncTask(status=S.PENDING, active_key=fields["target_node_id"], **fields)


def held(task_id: int, status: SyncTaskStatus, epoch: int) -> list[ColumnElement[bool]]:
    """The task is still in ``status`` in the attempt ``epoch``: what a watcher's writes check."""
    return [
        TemplateSyncTask.id == task_id,
        TemplateSyncTask.status == status,
        TemplateSyncTask.epoch == epoch,
    ]


async def _move(
    session: AsyncSession,
    task_id: int,
    new: SyncTaskStatus,
    *,
    from_: tuple[SyncTaskStatus, ...],
    held_epoch: int | None = None,
    extra: tuple[ColumnElement[bool], ...] = (),
    instance_values: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    where = [TemplateSyncTask.id == task_id, *extra]
    if held_epoch is not None:
        where.append(TemplateSyncTask.epoch == held_epoch)
    active_key = TemplateSyncTask.target_node_id if new in ACTIVE else None
    moved = await move(
        session, TemplateSyncTask, TRANSITIONS, new, where, from_, active_key=active_key, **values
    )
    if moved != 1:
        return False
    await instance.follow_sync_task(session, task_id, INSTANCE[new], **(instance_values or {}))
    return True


async def claim(
    session: AsyncSession, task_id: int, source_node_id: int, source_node_name: str, upstream_nodes: str
) -> bool:
    """pending -> syncing for a new attempt (epoch + 1) from ``source_node_id``; False when
    the task was taken meanwhile (another coordinator, a cancel)."""
    return await _move(
        session,
        task_id,
        S.SYNCING,
        from_=(S.PENDING,),
        extra=(TemplateSyncTask.lease_owner.is_(None),),
        **_attempt_values(source_node_id, source_node_name, upstream_nodes),
    )


def _attempt_values(source_node_id: int, source_node_name: str, upstream_nodes: str) -> dict[str, Any]:
    return {
        "epoch": TemplateSyncTask.epoch + 1,
        "attempts": TemplateSyncTask.attempts + 1,
        "source_node_id": source_node_id,
        "source_node_name": source_node_name,
        "upstream_nodes": upstream_nodes,
        "bytes_done": 0,
        "progress": 0,  # follows bytes_done: the target's count comes with the first poll
        "rate_bytes_per_sec": 0,
        "next_attempt_at": None,
        "sync_start_time": func.coalesce(TemplateSyncTask.sync_start_time, utcnow()),
    }


async def unclaim(session: AsyncSession, task_id: int, epoch: int, next_attempt_at: datetime) -> bool:
    """syncing -> pending: the claimed attempt's transfer never started, so it is not counted."""
    return await _move(
        session,
        task_id,
        S.PENDING,
        from_=(S.SYNCING,),
        held_epoch=epoch,
        attempts=TemplateSyncTask.attempts - 1,
        next_attempt_at=next_attempt_at,
    )


async def requeue(
    session: AsyncSession, task_id: int, epoch: int, next_attempt_at: datetime, error_message: str
) -> bool:
    """syncing/importing -> pending: attempt ``epoch`` failed; the next one starts after a backoff."""
    return await _move(
        session,
        task_id,
        S.PENDING,
        from_=RUNNING,
        held_epoch=epoch,
        next_attempt_at=next_attempt_at,
        rate_bytes_per_sec=0,
        error_message=error_message,
    )


async def copied(
    session: AsyncSession, task_id: int, epoch: int, staged_name: str, progress: int, **counters: Any
) -> bool:
    """syncing -> importing: the target holds the whole image, verified, as ``staged_name``;
    ``counters``: the copy's last byte counts (bytes_sent, bytes_reused)."""
    return await _move(
        session,
        task_id,
        S.IMPORTING,
        from_=(S.SYNCING,),
        held_epoch=epoch,
        staged_name=staged_name,
        bytes_done=TemplateSyncTask.bytes_total,
        rate_bytes_per_sec=0,
        progress=progress,
        **counters,
    )


async def completed(session: AsyncSession, task_id: int, epoch: int, vmid: int, volume_id: str) -> bool:
    """importing -> completed: the target has the template as VM ``vmid``."""
    return await _move(
        session,
        task_id,
        S.COMPLETED,
        from_=(S.IMPORTING,),
        held_epoch=epoch,
        instance_values={"vmid": vmid, "volume_id": volume_id},
        vmid=vmid,
        progress=100,
        **_ended(None),
    )


async def fail(session: AsyncSession, task: TemplateSyncTask, reason: str, *, epoch: int | None) -> bool:
    """-> failed for good. A running task in the attempt ``epoch``; with ``epoch`` None, a
    pending one (no attempt runs: no lease applies)."""
    return await _move(
        session,
        task.id,
        S.FAILED,
        from_=(S.PENDING,) if epoch is None else RUNNING,
        held_epoch=epoch,
        instance_values={"vmid": task.vmid},
        **_ended(reason),
    )


def _ended(error: str | None) -> dict[str, Any]:
    """What every end (completed, failed, canceled) writes: canceled is as final as failed."""
    return {
        "error_message": error,
        "rate_bytes_per_sec": 0,
        "sync_end_time": utcnow(),
        "next_attempt_at": None,
    }


# What a user's retry takes back: a cancel keeps the verified bytes for one, as a failure does.
RETRYABLE = (S.FAILED, S.CANCELED)


async def retry(session: AsyncSession, task_id: int) -> bool:
    """failed/canceled -> pending (asked for by a user): a fresh set of automatic attempts,
    while the count goes on. Raises IntegrityError when another task to the node is active
    meanwhile. A canceled task's instance went with the cancel: the caller makes it again."""
    return await _move(
        session,
        task_id,
        S.PENDING,
        from_=RETRYABLE,
        error_message=None,
        attempts_before_retry=TemplateSyncTask.attempts,
        next_attempt_at=None,
        sync_end_time=None,
    )


def cancelable(status: str) -> bool:
    return TRANSITIONS.allowed(status, S.CANCELED)


async def cancel(session: AsyncSession, task_id: int, reason: str) -> bool:
    """pending/syncing -> canceled (a user's cancel: a running copy stops at its next ticket
    or poll, its epoch no longer the task's). The caller removes the unfinished instance."""
    moved = await move(
        session,
        TemplateSyncTask,
        TRANSITIONS,
        S.CANCELED,
        [TemplateSyncTask.id == task_id],
        active_key=None,
        **_ended(reason),
    )
    return moved == 1


async def cancel_pending_of_template(
    session: AsyncSession, template_id: int, version: int | None = None
) -> int:
    """Its template (or that version of it) is being deleted: pending tasks never start
    (running ones end on their own)."""
    where = [TemplateSyncTask.template_id == template_id]
    if version is not None:
        where.append(TemplateSyncTask.version == version)
    return await move(
        session,
        TemplateSyncTask,
        TRANSITIONS,
        S.CANCELED,
        where,
        from_=(S.PENDING,),
        active_key=None,
        **_ended("template deleted" if version is None else f"version {version} deleted"),
    )


async def record_progress(
    session: AsyncSession, task_id: int, status: SyncTaskStatus, epoch: int, **counters: Any
) -> bool:
    """A running task's counters (bytes, rate, progress; never its status: ``status`` is
    the one it must be in), while the writer's attempt is the task's; whether it still is."""
    result = await session.execute(
        update(TemplateSyncTask)
        .where(*held(task_id, status, epoch))
        .values(**counters)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
