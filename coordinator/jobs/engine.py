"""Claiming job rows with leases, so that no job is lost and none runs twice.

A job row (see ``Leased`` in the models) is due when its status is one of
the runner's statuses, its lease is free or expired and its
``next_attempt_at`` has come. A worker claims it with a conditional UPDATE
(portable: SQLite and MySQL both report the affected row count), renews the
lease while it works, and frees it when done. If the coordinator dies, the
lease expires and the next coordinator (or a replica) takes the job over.

A handler that raises unexpectedly (a bug, an answer it cannot read) is tried again after a
backoff, within its kind's limits (coordinator/jobs/limits.py); past them the job fails
through the kind's ``give_up``, with the reason. A database outage is not such an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.types import utcnow
from coordinator.errors import CoordinatorError
from coordinator.jobs.limits import ErrorLimits, after_error, describe

if TYPE_CHECKING:
    from coordinator.shared_limits import SharedLimit, Slot

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a stopping runner waits for its canceled handlers to release their leases.
JOB_STOP_WAIT = 2.0
OWNER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLost(CoordinatorError):
    """Another worker owns the job now; stop working on it."""


async def claim(session: AsyncSession, model: Any, job_id: int, lease: float) -> bool:
    now = utcnow()
    result = await session.execute(
        update(model)
        .where(
            model.id == job_id,
            or_(model.lease_owner.is_(None), model.lease_expires_at < now, model.lease_owner == OWNER),
        )
        .values(lease_owner=OWNER, lease_expires_at=now + timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def renew(session: AsyncSession, model: Any, job_id: int, lease: float) -> bool:
    result = await session.execute(
        update(model)
        .where(model.id == job_id, model.lease_owner == OWNER)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release(session: AsyncSession, model: Any, job_id: int) -> None:
    await session.execute(
        update(model)
        .where(model.id == job_id, model.lease_owner == OWNER)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def keep_lease(
    db: async_sessionmaker[AsyncSession], model: Any, job_id: int, lease: float, what: str
) -> None:
    """Renew the lease on ``job_id`` every third of ``lease`` until canceled; returns when
    another worker took the job (the caller stops working on it)."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            async with db() as session:
                kept = await renew(session, model, job_id, lease)
        except Exception as exc:
            # Renewed at the next turn if the database answers by then; a renewal after
            # the lease ran out still says whether another worker took the job meanwhile.
            if unreachable(exc):
                OUTAGE.failed(f"renewing the lease of {what}", exc)
            else:
                log.exception("%s: renewing the lease failed", what)
            continue
        if not kept:
            log.warning("%s: lease lost to another worker; stopping here", what)
            return


class JobRunner:
    """Runs ``handler(job_id)`` for every due row of ``model``, ``concurrency`` at a time."""

    def __init__(
        self,
        name: str,
        db: async_sessionmaker[AsyncSession],
        model: Any,
        statuses: tuple[str, ...],
        handler: Callable[[int], Coroutine[Any, Any, None]],
        *,
        give_up: Callable[[int, str], Awaitable[None]],
        limits: ErrorLimits,
        concurrency: int,
        lease: float,
        poll: float = 2.0,
        shared_limit: SharedLimit | None = None,
    ) -> None:
        """``give_up(job_id, reason)`` fails a job whose handler passed ``limits`` as the
        kind's other failures do (the row's status and error, what the user sees).
        ``shared_limit``: a slot of it is held while a job runs, so that ``concurrency``
        holds across every coordinator replica, not only in this process."""
        self.name = name
        self.db = db
        self.model = model
        self.statuses = statuses
        self.handler = handler
        self.give_up = give_up
        self.limits = limits
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.shared_limit = shared_limit
        self.running: dict[int, asyncio.Task[None]] = {}
        # Jobs whose lease this process holds in hold(): also those run outside the runner
        # (a cascade delete asked for by a request), which due() must not take "back".
        self._held: set[int] = set()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due jobs now instead of at the next poll."""
        self._wake.set()

    async def due(self, limit: int) -> list[int]:
        now = utcnow()
        m = self.model
        async with self.db() as session:
            ids = await session.scalars(
                select(m.id)
                .where(
                    m.status.in_(self.statuses),
                    # Our own lease on a job we do not run: its handler was stopped by a
                    # database outage (which also kept the release from being written).
                    # Taken back at once, not after the lease runs out.
                    or_(m.lease_owner.is_(None), m.lease_expires_at < now, m.lease_owner == OWNER),
                    or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now),
                    m.id.not_in(list(self.running.keys() | self._held) or [0]),
                )
                .order_by(m.id)
                .limit(limit)
            )
            return list(ids)

    async def run_forever(self) -> None:
        while True:
            try:
                free = self.concurrency - len(self.running)
                if free > 0:
                    due = await self.due(free)
                    OUTAGE.answered()
                    for job_id in due:
                        if not await self._start(job_id):
                            break  # every slot of the shared limit is held (maybe by other replicas)
            except Exception as exc:
                if unreachable(exc):
                    OUTAGE.failed(f"looking for due {self.name} jobs", exc)
                else:
                    log.exception("%s: looking for due jobs failed; retrying", self.name)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _start(self, job_id: int) -> bool:
        """Claim the job and run it, within the shared limit; False if no slot of it is free."""
        slot = None
        if self.shared_limit is not None:
            slot = await self.shared_limit.take(f"{self.name}-{job_id}")
            if slot is None:
                return False
        try:
            async with self.db() as session:
                claimed = await claim(session, self.model, job_id, self.lease)
        except BaseException:
            await self._release_slot(slot)
            raise
        if claimed and job_id not in self._held:  # (held: taken up by a request meanwhile)
            self.running[job_id] = asyncio.create_task(self._run(job_id, slot), name=f"{self.name}-{job_id}")
        else:
            await self._release_slot(slot)
        return True

    async def _release_slot(self, slot: Slot | None) -> None:
        if slot is not None and self.shared_limit is not None:
            await self.shared_limit.give_back(slot)

    async def _keep_lease(self, job_id: int, work: asyncio.Task[T], lost: asyncio.Event) -> None:
        await keep_lease(self.db, self.model, job_id, self.lease, f"{self.name} job {job_id}")
        lost.set()
        work.cancel()

    async def hold(self, job_id: int, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on a job this process has claimed, keeping its lease fresh; the lease
        is released at the end. Raises LeaseLost if another worker took the job meanwhile."""
        self._held.add(job_id)
        task = asyncio.create_task(work)
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(job_id, task, lost))
        try:
            return await task
        except asyncio.CancelledError:
            if lost.is_set():
                raise LeaseLost(f"{self.name} {job_id}") from None
            if not task.cancelled():
                task.cancel()
            raise
        finally:
            self._held.discard(job_id)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            try:
                async with self.db() as session:
                    await release(session, self.model, job_id)
            except Exception as exc:
                if not unreachable(exc):
                    log.exception("%s %s: releasing the lease failed (it will expire)", self.name, job_id)
            self.wake()

    async def _run(self, job_id: int, slot: Slot | None = None) -> None:
        try:
            await self.hold(job_id, self.handler(job_id))
            await self._forget_errors(job_id)
        except LeaseLost:
            pass
        except Exception as exc:
            ids = (self.name, job_id)
            if unreachable(exc):
                # Whatever it was doing goes on without us (an agent importing, streaming);
                # the job keeps its lease, and due() hands it back once the database answers.
                OUTAGE.failed(f"running {self.name} job {job_id}", exc)
                log.info("%s %s: interrupted by the database outage; resumes once it answers", *ids)
            else:
                await self._after_error(job_id, exc)
        finally:
            self.running.pop(job_id, None)
            await self._release_slot(slot)

    async def _after_error(self, job_id: int, error: Exception) -> None:
        """Count the unexpected error on the job's row and postpone the job, or fail it
        through ``give_up`` once the kind's limits are passed."""
        what = f"{self.name} {job_id}"
        try:
            async with self.db() as session:
                job = await session.get(self.model, job_id)
                if job is None:
                    return
                now = utcnow()
                job.unexpected_errors += 1
                job.first_error_at = job.first_error_at or now
                errors, first_at = job.unexpected_errors, job.first_error_at
                verdict = after_error(self.limits, errors, first_at, now, describe(error))
                if verdict.give_up is None:
                    job.next_attempt_at = now + timedelta(seconds=verdict.retry_in)
                await session.commit()
            if verdict.give_up is None:
                log.error("%s: unexpected error; retrying in %.0f s", what, verdict.retry_in, exc_info=error)
                return
            log.error("%s: unexpected error; %s", what, verdict.give_up, exc_info=error)
            await self.give_up(job_id, verdict.give_up)
        except Exception as exc:
            # Not counted: the job runs again at once (the database will answer, or the
            # next error is counted).
            if not unreachable(exc):
                log.exception("%s: recording an unexpected error failed", what)

    async def _forget_errors(self, job_id: int) -> None:
        """A handler run that ended normally ends the streak of unexpected errors."""
        try:
            async with self.db() as session:
                await session.execute(
                    update(self.model)
                    .where(self.model.id == job_id, self.model.unexpected_errors > 0)
                    .values(unexpected_errors=0, first_error_at=None)
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        except Exception as exc:
            if not unreachable(exc):
                raise

    async def stop(self) -> None:
        """Cancel the running handlers, saying which; each releases its lease, so the next
        coordinator takes the job over at once, where the job's row says it is."""
        if self.running:
            log.info(
                "stopping %s job(s) %s mid-work: left to resume by the next coordinator (leases released)",
                self.name,
                ", ".join(str(job_id) for job_id in sorted(self.running)),
            )
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=JOB_STOP_WAIT)
