"""Which rows changed since the last poll, when "changed" is a moved ``updated_at``.

Every replica writes ``updated_at`` with its own clock, and a transaction commits some time
after it took its ``updated_at``: a poll for rows past the latest time seen would miss a
row written earlier that committed later, or by a replica whose clock is behind. So each
poll reads from ``OVERLAP`` before the watermark, and rows read again are told apart by
what a subscriber would notice (shaping.signature): a row read again unchanged is not an
event. The watermark is the latest ``updated_at`` seen, but never past this process's own
clock (a replica whose clock is ahead would otherwise hide everyone else's writes).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from coordinator.events.shaping import Key, is_active, key_of, signature
from shared.messages.events import Event

# Commit delay and clock skew between replicas tolerated (replicas run NTP: well under a second).
OVERLAP = timedelta(seconds=5)
# An active object unchanged this long is forgotten too (its row may be gone: a deleted
# template's tasks); should it be read again unchanged, it is sent once more, no harm.
FORGET_ACTIVE_AFTER = timedelta(hours=1)


class Watermark:
    def __init__(self, start: datetime, overlap: timedelta = OVERLAP) -> None:
        self.latest = start
        self.overlap = overlap

    def since(self, now: datetime) -> datetime:
        """Where the next poll reads from."""
        return min(self.latest, now) - self.overlap

    def saw(self, at: datetime) -> None:
        self.latest = max(self.latest, at)


class ChangeLog:
    """The last state sent of each object (the active ones, and those changed within the
    overlap): what is read again unchanged is dropped."""

    def __init__(self) -> None:
        self._last: dict[Key, tuple[tuple[Any, ...], datetime, bool]] = {}

    def changed(self, events: Iterable[Event]) -> list[Event]:
        out = []
        for event in events:
            key, sig = key_of(event), signature(event)
            last = self._last.get(key)
            if last is not None and last[0] == sig:
                continue
            self._last[key] = (sig, event.at, is_active(event))
            out.append(event)
        return out

    def forget_before(self, since: datetime) -> None:
        """Drop finished objects that no poll from ``since`` reads again unless they change
        (and active ones unchanged for FORGET_ACTIVE_AFTER)."""
        stale = [
            key
            for key, (_, at, active) in self._last.items()
            if at < since and (not active or at < since - FORGET_ACTIVE_AFTER)
        ]
        for key in stale:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


class SnapshotFence:
    """A connection's first state against the changes queued meanwhile: a poll that read a
    row before the first state did may publish after the subscriber joined, so a queued
    change can be older than what the client already has. Such a change (its ``at`` not past
    the first state's for that object) is dropped; the first newer one lifts the fence."""

    def __init__(self, first: Iterable[Event]) -> None:
        self._at = {key_of(event): event.at for event in first}

    def passes(self, event: Event) -> bool:
        key = key_of(event)
        at = self._at.get(key)
        if at is None:
            return True
        if event.at <= at:
            return False
        del self._at[key]
        return True
