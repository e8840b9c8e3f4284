"""Limits that hold across coordinator replicas: numbered slots kept in the database.

A limit of N in a scope (uploads in all, one token's uploads, running imports, the sync
planner) is N possible rows of ``limit_slot``; the unique (scope, slot) key lets only one
holder have each, whichever replica asks, on MariaDB as on SQLite. A process renews every
slot it holds (``keep_alive``); a killed coordinator's slots come free when they expire,
as its job leases do. Taking a slot never waits: None says the limit is reached.

Every replica must have the same limits in its settings: a slot number is taken only
below the taker's own limit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.models import LimitSlot
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.types import utcnow
from coordinator.jobs.engine import OWNER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    scope: str
    number: int
    holder: str


async def take(
    db: async_sessionmaker[AsyncSession], scope: str, limit: int, what: str, ttl: float
) -> Slot | None:
    """A free slot of ``scope`` (one of ``limit``) for ``what``, or None if all are held."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    holder = f"{what}-{secrets.token_hex(4)}"
    async with db() as session:
        held = dict(
            (
                await session.execute(
                    select(LimitSlot.slot, LimitSlot.expires_at).where(LimitSlot.scope == scope)
                )
            ).all()
        )
    for number in range(limit):
        if number in held and held[number] >= now:
            continue
        async with db() as session:
            if number in held:  # its holder stopped renewing it: take it over, if nobody did yet
                result = await session.execute(
                    update(LimitSlot)
                    .where(LimitSlot.scope == scope, LimitSlot.slot == number, LimitSlot.expires_at < now)
                    .values(owner=OWNER, holder=holder, expires_at=expires)
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    return Slot(scope, number, holder)
                continue
            session.add(LimitSlot(scope=scope, slot=number, owner=OWNER, holder=holder, expires_at=expires))
            try:
                await session.commit()
            except IntegrityError:  # another holder (maybe another replica) was first
                continue
            return Slot(scope, number, holder)
    return None


async def release(db: async_sessionmaker[AsyncSession], slot: Slot) -> None:
    """Give the slot back (a slot that expired meanwhile and was taken over stays with its taker)."""
    async with db() as session:
        await session.execute(
            delete(LimitSlot).where(
                LimitSlot.scope == slot.scope,
                LimitSlot.slot == slot.number,
                LimitSlot.owner == OWNER,
                LimitSlot.holder == slot.holder,
            )
        )
        await session.commit()


async def in_use(db: async_sessionmaker[AsyncSession], scope: str, limit: int) -> int:
    """How many of the scope's slots are held now."""
    async with db() as session:
        count = await session.scalar(
            select(func.count()).where(
                LimitSlot.scope == scope, LimitSlot.slot < limit, LimitSlot.expires_at >= utcnow()
            )
        )
    return int(count or 0)


class SharedLimit:
    """A limit of ``limit`` at a time in ``scope``, across replicas; slots last ``ttl`` unrenewed."""

    def __init__(self, db: async_sessionmaker[AsyncSession], scope: str, limit: int, ttl: float) -> None:
        self.db = db
        self.scope = scope
        self.limit = limit
        self.ttl = ttl

    async def take(self, what: str) -> Slot | None:
        return await take(self.db, self.scope, self.limit, what, self.ttl)

    async def give_back(self, slot: Slot) -> None:
        """Release ``slot``; a failure is logged, not raised (the slot expires then)."""
        try:
            await asyncio.shield(release(self.db, slot))
        except Exception as exc:
            if unreachable(exc):
                OUTAGE.failed(f"giving back a slot of {self.scope}", exc)
            else:
                log.exception("giving back a slot of %s failed (it will expire)", self.scope)

    async def in_use(self) -> int:
        return await in_use(self.db, self.scope, self.limit)


async def renew_all(db: async_sessionmaker[AsyncSession], ttl: float) -> None:
    async with db() as session:
        await session.execute(
            update(LimitSlot)
            .where(LimitSlot.owner == OWNER)
            .values(expires_at=utcnow() + timedelta(seconds=ttl))
            .execution_options(synchronize_session=False)
        )
        await session.commit()


async def keep_alive(db: async_sessionmaker[AsyncSession], ttl: float) -> None:
    """Renew this process's slots every ttl/3 until cancelled (one UPDATE for all of them)."""
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            await renew_all(db, ttl)
        except Exception as exc:
            if unreachable(exc):
                OUTAGE.failed("renewing the shared limits' slots", exc)
            else:
                log.exception("renewing the shared limits' slots failed; trying again")
