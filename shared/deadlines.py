"""Deadlines for waits on another part (PVE, an agent): how long, and whether it has passed.

A wait on an import or a copy may take as long as its image needs, so its deadline is a
base plus so many seconds per GiB of the image; both are settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

GIB = 1 << 30


def scaled_timeout(base: float, seconds_per_gib: float, size_bytes: int) -> float:
    """``base`` seconds plus ``seconds_per_gib`` for every GiB (a part GiB counts in part)."""
    return base + seconds_per_gib * max(size_bytes, 0) / GIB


class Deadline:
    """``seconds`` from now (on a monotonic clock, so wall-clock jumps do not move it)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._ends_at = clock() + seconds

    def remaining(self) -> float:
        return max(self._ends_at - self._clock(), 0.0)

    def passed(self) -> bool:
        return self._clock() >= self._ends_at

    def missed(self) -> str:
        """What to say of a wait that ran into this deadline."""
        return f"did not finish within {self.seconds:.0f} s"


# An upload's body: a receiver that takes none of it for this long is stuck (a hung agent
# or coordinator; a full disk is answered with 507, not a stall).
UPLOAD_STALL_SECONDS = 120.0


def upload_answer_seconds(size_bytes: int) -> float:
    """How long an upload's answer may take after its last byte: the agent checks the image
    (qemu-img info, then check: each under 120 s, agent/validate.py) and flushes it."""
    return scaled_timeout(600.0, 10.0, size_bytes)
