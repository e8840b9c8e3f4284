"""How much staging may keep, and which staged copies go first (pure logic, no I/O).

Staging keeps every complete image it has: an upload waiting for its import, and, for
local storage, the copies other nodes sync from. Kept without limit, they take as much
disk as PVE's own storage, so each agent has a budget (``staging_budget``): copies that
no work needs are evicted, least recently used first, when a new image needs the room
or when staging is over the budget. Running work is never asked to wait for the budget:
only the disk itself can refuse an image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import AgentFault

# "50G", "512M", "1T", "1073741824": binary units (a G is 2**30 bytes), like qemu-img and PVE.
_SIZE = re.compile(r"([0-9]+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SHARE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
DEFAULT_BUDGET = "20%"


class BadBudget(AgentFault, ValueError):
    pass


@dataclass(frozen=True)
class Budget:
    """Either a number of bytes or a share of the staging filesystem's size."""

    bytes: int | None = None
    share: float | None = None

    def limit(self, filesystem_bytes: int) -> int:
        if self.bytes is not None:
            return self.bytes
        assert self.share is not None
        return int(filesystem_bytes * self.share)


def parse_budget(text: str) -> Budget:
    """``"20%"`` (of the staging filesystem) or a size: ``"50G"``, ``"512M"``, ``"1T"``, bytes."""
    raw = text.strip()
    if share := _SHARE.fullmatch(raw):
        value = float(share.group(1))
        if not 0 < value <= 100:
            raise BadBudget(f"staging_budget {text!r}: a share must be more than 0% and at most 100%")
        return Budget(share=value / 100)
    if size := _SIZE.fullmatch(raw):
        return Budget(bytes=int(size.group(1)) << _UNITS[size.group(2).upper()])
    raise BadBudget(
        f'staging_budget {text!r} is neither a share of the staging filesystem (e.g. "20%") '
        'nor a size (e.g. "50G", "512M", or bytes)'
    )


@dataclass(frozen=True)
class StagedCopy:
    """A complete image in staging."""

    name: str
    size: int
    last_used: float  # when it was last written, sent from or imported (seconds, any epoch)


def eviction_order(copies: list[StagedCopy], in_use: set[str]) -> list[StagedCopy]:
    """The copies that may go, least recently used first (names break ties, for repeatability)."""
    return sorted((c for c in copies if c.name not in in_use), key=lambda c: (c.last_used, c.name))


def bytes_to_free(used: int, budget: int, free: int, need: int, reserve: int, evictable: int) -> int:
    """How many bytes of copies to evict so that ``need`` more bytes fit.

    ``used``: what staging holds now; ``free``: what the filesystem has free; ``reserve``:
    what must stay free besides. After eviction staging plus the new image should be within
    the budget and the disk should have room for it. When even every evictable copy would
    not make room on the disk, the disk is no reason to evict (the image is refused anyway,
    and the copies would be lost for nothing); the budget still is.
    """
    over_budget = used + need - budget
    short_on_disk = need + reserve - free
    if short_on_disk > evictable:
        short_on_disk = 0
    return max(over_budget, short_on_disk, 0)
