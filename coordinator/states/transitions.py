"""A transition table: which status may become which (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

S = TypeVar("S", bound=StrEnum)


class Transitions(Generic[S]):
    """The statuses each status may go to; a status missing from the table is final."""

    def __init__(self, table: Mapping[S, frozenset[S]]) -> None:
        self.table = dict(table)

    def allowed(self, old: str, new: S) -> bool:
        return any(old == status and new in targets for status, targets in self.table.items())

    def sources(self, new: S) -> tuple[S, ...]:
        """The statuses from which ``new`` may be reached (what a conditional UPDATE checks)."""
        return tuple(status for status, targets in self.table.items() if new in targets)
