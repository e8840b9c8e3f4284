"""When an image reached each node of a relay chain: the same figures for the agents' syncs and
for the plain TCP relay they are read against."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.baselines.relay import HopTimes
from benchmarks.receives import ReceiveTrace


@dataclass(frozen=True)
class HopTiming:
    first: float
    """The first bytes were there (agents: verified; relay: received)."""
    all: float
    """Every byte was there, in the page cache (agents: verified and written)."""
    done: float
    """The copy was durable (fdatasync; agents: and its sha256 matched, state complete)."""
    rate: float
    """Bytes per second from ``first`` to ``all``."""

    @classmethod
    def of_trace(cls, trace: ReceiveTrace) -> HopTiming:
        return cls(trace.first_verified.at, trace.all_verified.at, trace.complete.at, trace.stream_rate)

    @classmethod
    def of_relay(cls, times: HopTimes) -> HopTiming:
        return cls(times.first, times.last, times.done, times.bytes / (times.last - times.first))


@dataclass(frozen=True)
class ChainTiming:
    hops: dict[str, HopTiming]

    @property
    def start(self) -> float:
        """The first bytes at the first node of the chain."""
        return min(h.first for h in self.hops.values())

    @property
    def to_all(self) -> float:
        """Seconds from the first bytes at the first node until every node had every byte."""
        return max(h.all for h in self.hops.values()) - self.start

    @property
    def to_done(self) -> float:
        """Seconds from the first bytes at the first node until the last node's copy was durable."""
        return max(h.done for h in self.hops.values()) - self.start

    @property
    def first_rate(self) -> float:
        """The stream rate at the first node of the chain."""
        return min(self.hops.values(), key=lambda h: h.first).rate
