"""Identical reads that arrive together share one trip to the database.

API clients poll: dashboards, CLIs watching tasks, scripts waiting for an import, often
the same list at the same moment. Each GET cost a statement of its own, and on MariaDB a
statement is a round trip plus the optimizer on both sides of the two cores (0.1-0.2 ms
each, issue 12): eight clients polling one page kept mariadbd as busy as the coordinator.

A read joins another only while that one is still forming: the statements of a batch are
sent at the end of the event loop's current round, and a read that arrives after that
starts the next batch. So every reader gets a snapshot taken after its request arrived:
a client that wrote and then reads sees its write, as without sharing. The rows are shared
(readers build their answers from them and never change them).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import Dialect

from coordinator.db.fast_reads import Call, Reads, Row

Key = tuple[bool, tuple[tuple[int, tuple[tuple[str, Any], ...]], ...]]
Result = list[list[Row]]


def _key(calls: tuple[Call, ...], short: bool) -> Key:
    return short, tuple((id(query), tuple(sorted(params.items()))) for query, params in calls)


class SharedReads:
    """``reads`` with identical concurrent fetches sent once (the Reads protocol)."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads  # the database's own
        self.dialect: Dialect = reads.dialect
        self._forming: dict[Key, asyncio.Future[Result]] = {}
        self._sending: set[asyncio.Task[Result]] = set()
        self.sent = 0  # batches sent (tests, benchmarks)

    async def fetch(self, *calls: Call, short: bool = True) -> Result:
        key = _key(calls, short)
        batch = self._forming.get(key)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = loop.create_future()
            self._forming[key] = batch
            loop.call_soon(self._send, key, batch, calls, short)
        # A reader that gives up (its client went away) leaves the batch to the others.
        return await asyncio.shield(batch)

    def _send(self, key: Key, batch: asyncio.Future[Result], calls: tuple[Call, ...], short: bool) -> None:
        del self._forming[key]  # from here on, a new reader starts the next batch
        self.sent += 1
        task = asyncio.ensure_future(self.reads.fetch(*calls, short=short))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._settle(done, batch))

    def _settle(self, done: asyncio.Task[Result], batch: asyncio.Future[Result]) -> None:
        self._sending.discard(done)
        if done.cancelled():
            batch.cancel()
        elif (exc := done.exception()) is not None:
            batch.set_exception(exc)
            batch.exception()  # retrieved: every reader may have gone
        else:
            batch.set_result(done.result())

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self.reads.close()
