"""Which events a subscriber asked for: ``template_id``, ``task_id`` (the object's id) and
``kind`` (one or more, comma-separated), all optional, all of them must match."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.errors import CoordinatorError
from shared.messages.events import EVENT_KINDS, Event, EventKind


class BadFilter(CoordinatorError, ValueError):
    """``field``: the query parameter at fault; the message says what it must be."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class EventFilter:
    template_id: int | None = None
    task_id: int | None = None
    kinds: frozenset[EventKind] = frozenset(EVENT_KINDS)

    def matches(self, event: Event) -> bool:
        return (
            event.kind in self.kinds
            and (self.template_id is None or event.template_id == self.template_id)
            and (self.task_id is None or event.id == self.task_id)
        )

    def wants(self, kind: EventKind) -> bool:
        return kind in self.kinds


def parse_kinds(raw: str | None, allowed: tuple[EventKind, ...] = EVENT_KINDS) -> frozenset[EventKind]:
    """The kinds named in ``raw`` (comma-separated; None: every allowed one), or BadFilter."""
    if raw is None:
        return frozenset(allowed)
    names = [name.strip() for name in raw.split(",")]
    chosen = {kind for kind in allowed if kind in names}
    unknown = [name for name in names if name not in allowed]
    if unknown or not chosen:
        raise BadFilter(
            "kind", f"kind must be one or more of {', '.join(allowed)}, comma-separated (got {raw[:60]!r})"
        )
    return frozenset(chosen)
