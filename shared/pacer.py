"""A bandwidth cap shared by several streams: bytes per second for all of them together.

Every chunk is booked on one timeline: it may pass once the chunks booked before it and
itself have had their share of time at ``rate``. So N bytes through the pacer take at
least N / rate seconds, however many streams interleave, and a quiet spell earns no
burst. Streams that together stay under the cap are never held back.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    def __init__(self, rate: float) -> None:
        """``rate`` in bytes per second; 0 (or less) lets everything through at once."""
        self.rate = rate
        self._free_at = 0.0  # when everything booked so far has had its time

    def book(self, n: int, now: float) -> float:
        """Book ``n`` bytes at time ``now``; returns how long their sender must wait."""
        if self.rate <= 0:
            return 0.0
        self._free_at = max(self._free_at, now) + n / self.rate
        return self._free_at - now

    async def take(self, n: int) -> None:
        delay = self.book(n, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
