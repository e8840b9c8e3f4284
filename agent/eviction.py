"""Keeping staging within its budget: evicting staged copies that no work needs.

Before an upload or a peer's copy takes space, and every ``SWEEP_SECONDS``, the agent
works out how many bytes must go (staging_budget.py) and offers its copies, least
recently used first, skipping those its own running work reads (a send, a relay, an
import). Each one is offered to the coordinator first: it alone knows the pending work
(a sync task waiting for a source, the last copy of a template's image), and it stops
counting the copy as one this node holds before the file goes, so the scheduler never
picks a source that is being evicted. A copy the coordinator does not answer for stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from agent.staging import Staging
from agent.staging_budget import Budget, bytes_to_free, eviction_order

log = logging.getLogger(__name__)
SWEEP_SECONDS = 30.0
MIB = 1 << 20


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


class Evictor:
    def __init__(
        self,
        staging: Staging,
        budget: Budget,
        release: Callable[[str], Awaitable[tuple[bool, str]]],
        in_use: Callable[[], set[str]],
        drop: Callable[[str], None],
    ) -> None:
        self.staging = staging
        self.budget = budget
        self.release = release  # asks the coordinator: (may it go, why)
        self.in_use = in_use  # what this agent's running work reads
        self.drop = drop  # removes a copy (and whatever the agent keeps about it)
        self._lock = asyncio.Lock()  # one decision at a time: two receives must not count the same room
        self._kept: dict[str, str] = {}  # copy -> why the coordinator kept it (logged when it changes)
        self._short: str | None = None  # what the last pass could not free

    async def make_room(self, need: int, reserve: int, purpose: str) -> int:
        """Evict until ``need`` more bytes fit within the budget and on the disk, as far as
        copies may go; returns the bytes evicted."""
        async with self._lock:
            limit = self.budget.limit(self.staging.filesystem_bytes())
            used = self.staging.used_bytes()
            candidates = eviction_order(self.staging.copies(), self.in_use())
            to_free = bytes_to_free(
                used, limit, self.staging.free_bytes(), need, reserve, sum(c.size for c in candidates)
            )
            if to_free <= 0:
                self._short = None
                return 0
            why = f"{purpose}; staging holds {mib(used)} of its {mib(limit)} budget"
            freed = 0
            for copy in candidates:
                if freed >= to_free:
                    break
                released, reason = await self.release(copy.name)
                if not released:
                    if self._kept.get(copy.name) != reason:
                        log.info("staged copy %s (%s) kept: %s", copy.name, mib(copy.size), reason)
                    self._kept[copy.name] = reason
                    continue
                if copy.name in self.in_use():
                    # A send from it started while the coordinator was asked: it stays for now
                    # (no longer counted as held, the next sweep evicts it).
                    continue
                self._kept.pop(copy.name, None)
                self.drop(copy.name)
                freed += copy.size
                log.info(
                    "evicted staged copy %s: %d bytes, last used %.0f s ago (%s; %s)",
                    copy.name,
                    copy.size,
                    time.time() - copy.last_used,
                    why,
                    reason,
                )
            short = f"{mib(to_free - freed)} more wanted ({why}) but no other copy may go now"
            if freed < to_free and short != self._short:  # (a sweep finding the same: said once)
                log.info("staging: %s", short)
            self._short = short if freed < to_free else None
            return freed

    async def sweep_forever(self) -> None:
        """Bring staging back within its budget when work that held copies has ended."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            with contextlib.suppress(OSError):
                await self.make_room(0, 0, "staging is over its budget")
