"""At most one message per object per ``interval`` (0.25 s: 4 a second), without losing a status.

Per object, what waits to be sent is a short list of states, one per status in the order
they came: a newer state of the same status replaces the waiting one (the latest wins:
bytes and progress only move forward), a new status is appended. So every status an object
passes through is sent, the last state it reached is always sent, and a waiting list is as
long as the statuses still unsent (a handful), whatever the rate of changes. An object
whose slot is free is sent at once: a lone change has no delay.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class HasStatus(Protocol):
    @property
    def status(self) -> str: ...


E = TypeVar("E", bound=HasStatus)
INTERVAL = 0.25


@dataclass
class _Object(Generic[E]):
    sent_at: float | None = None
    waiting: list[E] = field(default_factory=list)


class Coalescer(Generic[E]):
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._objects: dict[Hashable, _Object[E]] = {}

    def offer(self, key: Hashable, event: E) -> None:
        obj = self._objects.setdefault(key, _Object())
        if obj.waiting and obj.waiting[-1].status == event.status:
            obj.waiting[-1] = event
        else:
            obj.waiting.append(event)

    def due(self, now: float) -> list[E]:
        """The states to send now (at most one per object), oldest status first."""
        out: list[E] = []
        for key, obj in list(self._objects.items()):
            if not obj.waiting:
                # forgotten once its slot is free again: the next change goes out at once
                if obj.sent_at is None or now - obj.sent_at >= self.interval:
                    del self._objects[key]
                continue
            if obj.sent_at is None or now - obj.sent_at >= self.interval:
                out.append(obj.waiting.pop(0))
                obj.sent_at = now
        return out

    def next_due(self, now: float) -> float | None:
        """Seconds until ``due`` has something to send (0: now), None if nothing waits."""
        waits = [
            0.0 if obj.sent_at is None else max(0.0, obj.sent_at + self.interval - now)
            for obj in self._objects.values()
            if obj.waiting
        ]
        return min(waits, default=None)

    def waiting(self) -> int:
        return sum(len(obj.waiting) for obj in self._objects.values())
