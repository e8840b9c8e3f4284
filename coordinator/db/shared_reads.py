"""Identical reads that arrive together share one trip to the database.

API clients poll: dashboards, CLIs watching tasks, scripts waiting for an import, often
the same list at the same moment. Each GET cost a statement of its own, and on MariaDB a
statement is a round trip plus the optimizer on both sides of the two cores (0.1-0.2 ms
each, issue 12): eight clients polling one page kept mariadbd as busy as the coordinator.

A read joins another only while that one is still forming, never one already sent: a
batch is sent at the end of the event loop's current round, or, while a batch of the same
statements is on the wire, when that one has come back (one at a time per statement and
parameters: under load the readers that arrive meanwhile all share the next trip). So
every reader gets a snapshot taken after its request arrived: a client that wrote and then
reads sees its write, as without sharing. The rows are shared (readers build their
answers from them and never change them).
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
        # Batches not sent yet (readers may join), and the one on the wire, per key.
        self._forming: dict[Key, tuple[asyncio.Future[Result], tuple[Call, ...], bool]] = {}
        self._on_the_wire: dict[Key, asyncio.Task[Result]] = {}
        self.sent = 0  # batches sent (tests, benchmarks)
        self._closed = False

    async def fetch(self, *calls: Call, short: bool = True) -> Result:
        key = _key(calls, short)
        forming = self._forming.get(key)
        if forming is None:
            loop = asyncio.get_running_loop()
            forming = (loop.create_future(), calls, short)
            self._forming[key] = forming
            if key not in self._on_the_wire:
                loop.call_soon(self._send, key)
            # else: sent when the one on the wire comes back (_settle)
        # A reader that gives up (its client went away) leaves the batch to the others.
        return await asyncio.shield(forming[0])

    def _send(self, key: Key) -> None:
        batch, calls, short = self._forming.pop(key)  # from here on, new readers form the next
        self.sent += 1
        task = asyncio.ensure_future(self.reads.fetch(*calls, short=short))
        self._on_the_wire[key] = task
        task.add_done_callback(lambda done: self._settle(key, done, batch))

    def _settle(self, key: Key, done: asyncio.Task[Result], batch: asyncio.Future[Result]) -> None:
        del self._on_the_wire[key]
        if done.cancelled():
            batch.cancel()
        elif (exc := done.exception()) is not None:
            batch.set_exception(exc)
            batch.exception()  # retrieved: every reader may have gone
        else:
            batch.set_result(done.result())
        if key in self._forming and not self._closed:
            self._send(key)

    async def close(self) -> None:
        self._closed = True
        for batch, _, _ in self._forming.values():
            batch.cancel()
        self._forming.clear()
        sending = list(self._on_the_wire.values())
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        await self.reads.close()
