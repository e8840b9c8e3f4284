"""A clone's states (clones.status) and every write of one.

::

    (new)            --the node has an available instance-->                 pending
    (new)            --the node needs the template first (a sync task)-->   waiting_for_sync
    pending          --a VMID held, the node's agent asked to clone-->        cloning
    waiting_for_sync --its sync task completed, then as pending-->           cloning
    waiting_for_sync --its sync task failed or was canceled-->               failed
    cloning          --the agent's clone is done (the VM is configured)-->   completed
    pending/waiting_for_sync/cloning --the clone cannot be made-->           failed

Pending, waiting_for_sync and cloning clones are durable jobs (coordinator/jobs/clones.py):
worked by whoever holds the row's lease, so a writer that is the job passes ``leased``
and its write happens only while this process still holds that lease. ``vmid_key`` is the
VMID while the clone is under way and NULL once it ended (the unique (cluster, vmid_key)
key: coordinator/db/models.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Clone
from coordinator.db.types import utcnow
from coordinator.jobs.engine import OWNER
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class CloneStatus(StrEnum):
    PENDING = "pending"
    WAITING_FOR_SYNC = "waiting_for_sync"
    CLONING = "cloning"
    COMPLETED = "completed"
    FAILED = "failed"


# The API's name for the statuses (tests/unit/test_states.py: the same values).
CloneStatusName = Literal["pending", "waiting_for_sync", "cloning", "completed", "failed"]

S = CloneStatus
# Under way: a durable job, holding its VMID (vmid_key).
ACTIVE = (S.PENDING, S.WAITING_FOR_SYNC, S.CLONING)
TRANSITIONS = Transitions[CloneStatus](
    {
        S.PENDING: frozenset({S.CLONING, S.FAILED}),
        S.WAITING_FOR_SYNC: frozenset({S.CLONING, S.FAILED}),
        S.CLONING: frozenset({S.COMPLETED, S.FAILED}),
    }
)


def new_clone(*, waits_for_sync: bool, **fields: Any) -> Clone:
    """A clone under way (pending, or waiting for its node's sync task); the caller adds it.
    A ``vmid`` given by the user is held from the start (the unique key refuses a taken one)."""
    status = S.WAITING_FOR_SYNC if waits_for_sync else S.PENDING
    return Clone(status=status, vmid_key=fields.get("vmid"), **fields)


def _where(clone_id: int, leased: bool) -> list[ColumnElement[bool]]:
    where = [Clone.id == clone_id]
    if leased:
        where.append(Clone.lease_owner == OWNER)
    return where


async def start(session: AsyncSession, clone_id: int) -> bool:
    """pending/waiting_for_sync -> cloning, by the job holding the lease (its VMID held)."""
    moved = await move(
        session,
        Clone,
        TRANSITIONS,
        S.CLONING,
        [*_where(clone_id, True), Clone.vmid_key.is_not(None)],
        progress=0,
        error_message=None,
    )
    return moved == 1


async def completed(session: AsyncSession, clone_id: int, linked: bool) -> bool:
    """cloning -> completed: the VM exists and is configured (``linked`` as PVE made it)."""
    moved = await move(
        session,
        Clone,
        TRANSITIONS,
        S.COMPLETED,
        _where(clone_id, True),
        linked=linked,
        progress=100,
        vmid_key=None,
        finished_at=utcnow(),
        error_message=None,
        next_attempt_at=None,
    )
    return moved == 1


async def fail(session: AsyncSession, clone_id: int, reason: str, *, leased: bool = True) -> bool:
    """-> failed for good, from any status under way; ``leased``: only by the job holding the
    lease (the engine's give_up, which runs after the lease is released, passes False). The
    VMID is let go: the agent destroyed whatever PVE made of the clone."""
    moved = await move(
        session,
        Clone,
        TRANSITIONS,
        S.FAILED,
        _where(clone_id, leased),
        vmid_key=None,
        finished_at=utcnow(),
        error_message=reason[:2000],
        next_attempt_at=None,
    )
    return moved == 1


async def hold_vmid(session: AsyncSession, clone_id: int, vmid: int) -> bool:
    """The clone (under way, leased here) holds ``vmid`` from now: never a status write. Raises
    IntegrityError when another clone in flight holds it (the caller chooses again)."""
    return await _set(session, clone_id, ACTIVE, vmid=vmid, vmid_key=vmid)


async def record(session: AsyncSession, clone_id: int, status: CloneStatus | None, **values: Any) -> bool:
    """A clone's counters (progress, source VMID, next attempt; never its status: ``status``
    is the one it must be in, None: any under way), while this process holds its lease;
    whether it still does."""
    return await _set(session, clone_id, ACTIVE if status is None else (status,), **values)


async def _set(
    session: AsyncSession, clone_id: int, statuses: tuple[CloneStatus, ...], **values: Any
) -> bool:
    result = await session.execute(
        update(Clone)
        .where(*_where(clone_id, True), Clone.status.in_(statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
