"""One change reader per coordinator process, fanned out to its WebSocket subscribers.

The reader polls the database every ``POLL_INTERVAL`` (changes.py says how a change is
found, whichever replica made it) only while at least one subscriber is connected: a
coordinator nobody watches does no work for events. Each subscriber has a bounded queue of
polls' changes: the reader never waits for one, and a subscriber whose queue is full (its
client stopped reading, so its session stopped taking changes off) is marked overflowed;
its session closes it (close code 4008) and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.types import utcnow
from coordinator.events import reader
from coordinator.events.changes import ChangeLog, Watermark
from coordinator.events.filters import EventFilter
from shared.messages.events import Event

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
# How long a new subscriber waits for the reader's first read (a database that does not answer).
READY_DEADLINE = 10.0


@dataclass(eq=False)
class Subscription:
    """``queue``: the changes of each poll that matched, one list per poll, not yet taken by
    the session; bounded, so a session that stops taking them is found out within
    ``maxsize`` polls (and the lists are the poll's events, not copies)."""

    wanted: EventFilter
    queue: asyncio.Queue[list[Event]]
    # Set whenever there is something for the session to do: events, overflow, shutdown.
    signal: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    stopping: bool = False

    def push(self, changes: list[Event]) -> None:
        if self.overflowed:
            return
        matched = [event for event in changes if self.wanted.matches(event)]
        if not matched:
            return
        try:
            self.queue.put_nowait(matched)
        except asyncio.QueueFull:
            self.overflowed = True
        self.signal.set()

    def stop(self) -> None:
        self.stopping = True
        self.signal.set()


class ChangeReader:
    """Polls for changed rows and hands the changes to ``hub.publish``."""

    def __init__(self, engine: AsyncEngine, hub: Hub, interval: float) -> None:
        self.engine = engine
        self.hub = hub
        self.interval = interval
        self.ready = asyncio.Event()
        self._log = ChangeLog()
        self._mark = Watermark(utcnow())
        self._task = asyncio.create_task(self._run(), name="events-reader")

    async def _run(self) -> None:
        first = True
        while True:
            try:
                changes = await self._poll()
                OUTAGE.answered()
                if first:
                    # What changed before anyone subscribed is in each subscriber's first state.
                    first = False
                    self.ready.set()
                else:
                    self.hub.publish(changes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if unreachable(exc):
                    OUTAGE.failed("reading changes for events", exc)
                else:
                    log.exception("events: reading changes failed; will retry")
            await asyncio.sleep(self.interval)

    async def _poll(self) -> list[Event]:
        since = self._mark.since(utcnow())
        async with self.engine.connect() as conn:
            events = await reader.changed_since(conn, since)
        for event in events:
            self._mark.saw(event.at)
        changes = self._log.changed(events)
        self._log.forget_before(since)
        return changes

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Hub:
    def __init__(self, engine: AsyncEngine, queue_max: int, interval: float = POLL_INTERVAL) -> None:
        self.engine = engine
        self.queue_max = queue_max
        self.interval = interval
        self._subscribers: set[Subscription] = set()
        self._reader: ChangeReader | None = None
        self._closing = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, wanted: EventFilter) -> Subscription:
        """A new subscriber, once the reader has its starting point: a change after this
        returns reaches the subscriber, so a first state read after it misses nothing."""
        sub = Subscription(wanted, asyncio.Queue(self.queue_max))
        if self._closing:
            sub.stop()
            return sub
        self._subscribers.add(sub)
        if self._reader is None:
            self._reader = ChangeReader(self.engine, self, self.interval)
        try:
            await asyncio.wait_for(self._reader.ready.wait(), READY_DEADLINE)
        except BaseException:
            await self.unsubscribe(sub)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        if not self._subscribers and self._reader is not None:
            reader_, self._reader = self._reader, None
            await reader_.stop()

    def publish(self, changes: list[Event]) -> None:
        if changes:
            for sub in self._subscribers:
                sub.push(changes)

    async def close(self) -> None:
        """The coordinator stops: every session is told to close (1001), new ones are refused."""
        self._closing = True
        for sub in self._subscribers:
            sub.stop()
