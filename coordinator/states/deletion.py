"""A cascade delete's states (template_deletion.status, the job's row) and every write of one.

::

    (none) / done --cascade delete asked-->                running
    running       --every part removed-->                  done
    running       --the job engine gave up on it-->        failed
    failed        --cascade delete asked again-->          running

One row per template, reused when a cascade is asked for again. A running deletion is
worked under its lease (taken by the request that starts it, then the job runner's).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateDeletion
from coordinator.db.types import utcnow
from coordinator.jobs.engine import OWNER
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class DeletionStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# What the API shows of an unfinished deletion (tests/unit/test_states.py: the same values).
UnfinishedName = Literal["running", "failed"]

S = DeletionStatus
# Shown on its template (which is `deleting`).
UNFINISHED = (S.RUNNING, S.FAILED)
TRANSITIONS = Transitions[DeletionStatus](
    {
        S.RUNNING: frozenset({S.DONE, S.FAILED}),
        S.DONE: frozenset({S.RUNNING}),
        S.FAILED: frozenset({S.RUNNING}),
    }
)


def _leased(actor: str, lease: float) -> dict[str, Any]:
    """A fresh run, leased to this process: its counters and its error history start over."""
    return {
        "creator": actor,
        "attempts": 0,
        "reason": None,
        "next_attempt_at": None,
        "unexpected_errors": 0,
        "first_error_at": None,
        "lease_owner": OWNER,
        "lease_expires_at": utcnow() + timedelta(seconds=lease),
    }


async def start(session: AsyncSession, template_id: int, actor: str, lease: float) -> int:
    """The template's deletion running (its row made, or reused after an earlier cascade
    ended), leased to this process; its id. The caller holds the template's flip to
    deleting in the same transaction, so no other request starts one."""
    fresh = {"started_at": utcnow(), "finished_at": None, "remaining": "[]", **_leased(actor, lease)}
    where = [TemplateDeletion.template_id == template_id]
    # (failed too: a deletion given up while its last attempt finished the template)
    if not await move(session, TemplateDeletion, TRANSITIONS, S.RUNNING, where, **fresh):
        session.add(TemplateDeletion(template_id=template_id, status=S.RUNNING, **fresh))
        await session.flush()
    deletion_id = await session.scalar(select(TemplateDeletion.id).where(*where))
    assert deletion_id is not None
    return deletion_id


async def restart_failed(session: AsyncSession, deletion_id: int, actor: str, lease: float) -> bool:
    """failed -> running, leased to this process; of concurrent requests one does it."""
    moved = await move(
        session,
        TemplateDeletion,
        TRANSITIONS,
        S.RUNNING,
        [TemplateDeletion.id == deletion_id],
        from_=(S.FAILED,),
        **_leased(actor, lease),
    )
    return moved == 1


async def give_up(session: AsyncSession, deletion_id: int, reason: str) -> bool:
    """running -> failed with ``reason`` (the template stays deleting, showing it)."""
    moved = await move(
        session,
        TemplateDeletion,
        TRANSITIONS,
        S.FAILED,
        [TemplateDeletion.id == deletion_id],
        reason=reason,
        next_attempt_at=None,
    )
    return moved == 1


async def done(session: AsyncSession, deletion_id: int) -> bool:
    """running -> done: every part is removed."""
    moved = await move(
        session,
        TemplateDeletion,
        TRANSITIONS,
        S.DONE,
        [TemplateDeletion.id == deletion_id],
        finished_at=utcnow(),
        remaining="[]",
        reason=None,
        next_attempt_at=None,
    )
    return moved == 1
