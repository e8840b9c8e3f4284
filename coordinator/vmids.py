"""Choosing VMIDs for templates.

PVE's /cluster/nextid reserves nothing, so we pick the lowest id in the
template range that PVE does not use and that no job of ours holds, record it
on the job at once, and let the create fail with "already exists" if someone
else took it meanwhile: the job then picks again (excluding that id).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload
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
    return {v for v in held if v is not None}


def lowest_free(used: set[int], low: int, high: int) -> int:
    for vmid in range(low, high + 1):
        if vmid not in used:
            return vmid
    raise NoFreeVmid(f"every VMID in {low}..{high} is in use; widen template_vmid_min/max")


def allocation_lock() -> asyncio.Lock:
    return _lock
