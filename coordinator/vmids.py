"""Choosing VMIDs for templates and clones.

PVE's /cluster/nextid reserves nothing, so we pick the lowest id in the
template range that PVE does not use and that no job of ours holds, record it
on the job at once, and let the create fail with "already exists" if someone
else took it meanwhile: the job then picks again (excluding that id).

Clones take theirs from clone_vmid_min..clone_vmid_max (or, unset, from PVE's next free
id up) the same way, and record it in the clone's ``vmid_key``: its unique key refuses a
VMID that another clone in flight holds, whichever replica chose it, and the clone picks
again (coordinator/jobs/clones.py).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Clone, TemplateInstance, TemplateSyncTask, TemplateUpload
from coordinator.errors import CoordinatorError

_lock = asyncio.Lock()  # one allocation at a time in this process


class NoFreeVmid(CoordinatorError):
    pass


async def held_by_us(session: AsyncSession, cluster_id: int) -> set[int]:
    held: set[int] = set()
    held |= set(
        await session.scalars(
            select(TemplateUpload.vmid).where(
                TemplateUpload.cluster_id == cluster_id,
                TemplateUpload.vmid.is_not(None),
                TemplateUpload.status != "failed",
            )
        )
    )
    held |= set(
        await session.scalars(
            select(TemplateInstance.vmid).where(
                TemplateInstance.cluster_id == cluster_id,
                TemplateInstance.vmid.is_not(None),
                TemplateInstance.status != "deleted",
            )
        )
    )
    held |= set(
        await session.scalars(
            select(TemplateSyncTask.vmid).where(
                TemplateSyncTask.cluster_id == cluster_id,
                TemplateSyncTask.vmid.is_not(None),
                TemplateSyncTask.status.in_(("pending", "syncing", "importing")),
            )
        )
    )
    # Clones in flight (a finished clone's VM is in PVE's own list).
    held |= set(
        await session.scalars(
            select(Clone.vmid_key).where(Clone.cluster_id == cluster_id, Clone.vmid_key.is_not(None))
        )
    )
    return {v for v in held if v is not None}


def lowest_free(used: set[int], low: int, high: int, settings: str = "template_vmid_min/max") -> int:
    for vmid in range(low, high + 1):
        if vmid not in used:
            return vmid
    raise NoFreeVmid(f"every VMID in {low}..{high} is in use; widen {settings}")


# The highest VMID PVE takes.
VMID_MAX = 999_999_999


def clone_range(vmid_min: int, vmid_max: int, next_free: int | None) -> tuple[int, int]:
    """Where a clone's VMID is looked for: the configured range, or (both 0) from PVE's
    next free id up (``next_free``, read only then)."""
    if (vmid_min, vmid_max) != (0, 0):
        return vmid_min, vmid_max
    assert next_free is not None
    return max(next_free, 100), VMID_MAX


def allocation_lock() -> asyncio.Lock:
    return _lock
