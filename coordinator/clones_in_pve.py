"""Which clones still count: one whose VM is gone from PVE (an administrator destroyed it)
no longer does. One rule for everything that counts clones: a cascade or version delete
is not held up by such a clone (coordinator/template_delete.py), and the versions list
does not count it (coordinator/api/versions.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from coordinator.db.models import Clone
from coordinator.inventory.pve_client import PveError
from coordinator.states.clone import CloneStatus

log = logging.getLogger(__name__)
# The VMIDs PVE holds in a cluster (InventoryRefresher.used_vmids).
InPve = Callable[[int], Awaitable[set[int]]]


def counted(clones: Sequence[Clone], used: set[int] | None) -> list[Clone]:
    """The clones that count, given the VMIDs PVE holds (``used``; None: PVE did not answer,
    so every one counts). A clone not completed has no VM of its own yet: it counts (pure)."""
    if used is None:
        return list(clones)
    return [c for c in clones if c.status != CloneStatus.COMPLETED or c.vmid in used]


async def still_in_pve(clones: Sequence[Clone], in_pve: InPve | None, why: str) -> list[Clone]:
    """``counted``, asking PVE (once, only when a completed clone is among them) which VMIDs
    it holds; ``why``: what the answer is for, logged when PVE does not answer."""
    completed = [c for c in clones if c.status == CloneStatus.COMPLETED]
    if not completed or in_pve is None:
        return list(clones)
    try:
        used = await in_pve(completed[0].cluster_id)
    except PveError as exc:
        log.warning("%s: clones not checked with PVE (all counted): %s", why, exc.message)
        return list(clones)
    return counted(clones, used)
