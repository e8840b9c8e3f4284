"""Create-or-return under concurrency: the unique keys decide who creates, the others read it.

Two identical requests both find nothing and both insert; the database lets one win. How
the loser learns differs per database. SQLite lets writers through one at a time, so the
second insert breaks the unique key (IntegrityError; 11 of 12 concurrent identical sync
requests before this fix answered 500). MariaDB's InnoDB makes the second wait on the
first's uncommitted key, then reports the duplicate (1062; 8 of 12 answered 500); transactions that
each hold a lock the other needs (a task and an instance) end in a deadlock (1213)
instead. Either way the loser starts its transaction over: the winner has committed by
then, and the read finds its row.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")

MYSQL_DEADLOCK = 1213
# Each try after a lost race meets a committed winner; more than a few means something else.
TRIES = 5


def lost_race(exc: DBAPIError) -> bool:
    """Whether ``exc`` says a concurrent transaction got there first (so a fresh try reads its row)."""
    if isinstance(exc, IntegrityError):
        return True
    args = getattr(exc.orig, "args", ())
    if args and args[0] == MYSQL_DEADLOCK:
        return True
    # SQLite: a transaction that read before another committed cannot write any more.
    return "database is locked" in str(exc.orig)


async def create_or_return(
    db: async_sessionmaker[AsyncSession], work: Callable[[AsyncSession], Awaitable[T]], what: str
) -> T:
    """Run ``work`` (read, then create what is missing) and commit; on a lost race, again."""
    for attempt in range(1, TRIES + 1):
        async with db() as session:
            try:
                result = await work(session)
                await session.commit()
                return result
            except DBAPIError as exc:
                if attempt == TRIES or not lost_race(exc):
                    raise
                log.info("%s: a concurrent request got there first (%s); reading again", what, exc.orig)
    raise AssertionError("unreachable")
