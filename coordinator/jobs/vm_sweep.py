"""The sweep: VMs of ours on the nodes that no row of the database accounts for are removed.

What leaks one: an import or a sync import cut off mid-create whose agent could not remove
the VM (PVE was down at that moment), a job forgotten by a restored database, a cascade
delete that could not reach a node. Every ``vm_sweep_interval`` seconds each live agent
lists the VMs on its node in the template VMID range plus those in its VM journal (one PVE
call); the ones the database does not account for (``accounted``) are destroyed through the
agent, which destroys only what it proves ours (our marker in the description, or a create
of ours cut off at ``lock: create``: agent/vm_journal.py) and answers ``not_ours`` for
anything else: an administrator's VM in the range is listed but never touched. A VM whose
create or import is still running is left for a later round (``if_idle``).

Cost per round and node: one qemu list, plus one config read per unaccounted VM in the
range (normally none). At the default interval a leaked VM is found within one interval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks
from coordinator.agents.registry import live_agents
from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload, VmTemplate
from shared.error_slugs import ErrorSlug
from shared.messages.vms import ListedVm

log = logging.getLogger(__name__)
# Every import key starts with "t" (t<template>-u<upload>, t<template>-s<task>): any of ours.
ANY_OF_OURS = "t"
UPLOAD_HOLDS = ("uploading", "uploaded", "importing", "imported")
SYNC_HOLDS = ("pending", "syncing", "importing", "completed")


@dataclass(frozen=True)
class Removed:
    node: str
    vmid: int
    key: str
    why: str


def unaccounted(listed: Iterable[ListedVm], accounted: set[int]) -> list[int]:
    """VMIDs of a node's listing that no row accounts for and no import is working on."""
    return sorted(vm.vmid for vm in listed if vm.vmid not in accounted and not vm.importing)


async def accounted(session: AsyncSession, node_id: int) -> set[int]:
    """VMIDs on ``node_id`` that a row of the database holds: an instance neither deleted nor
    failed, an upload or sync task that is under way or finished well, of a template not deleted. A
    job records its VMID before its agent is asked to create it (coordinator/vmids.py),
    so a VM being made is always accounted for."""
    held = set(
        await session.scalars(
            select(TemplateInstance.vmid).where(
                TemplateInstance.node_id == node_id,
                # a failed instance keeps its task's VMID for the record, but holds no VM
                TemplateInstance.status.not_in(("deleted", "failed")),
                TemplateInstance.vmid.is_not(None),
            )
        )
    )
    held |= set(
        await session.scalars(
            select(TemplateUpload.vmid)
            .join(VmTemplate, VmTemplate.id == TemplateUpload.template_id)
            .where(
                TemplateUpload.import_node_id == node_id,
                TemplateUpload.status.in_(UPLOAD_HOLDS),
                TemplateUpload.vmid.is_not(None),
                VmTemplate.deleted_at.is_(None),
            )
        )
    )
    held |= set(
        await session.scalars(
            select(TemplateSyncTask.vmid).where(
                TemplateSyncTask.target_node_id == node_id,
                TemplateSyncTask.status.in_(SYNC_HOLDS),
                TemplateSyncTask.vmid.is_not(None),
            )
        )
    )
    return {v for v in held if v is not None}


async def sweep_vms(
    db: async_sessionmaker[AsyncSession], agents: AgentLinks, timeout: timedelta, vmid_range: tuple[int, int]
) -> list[Removed]:
    """One round over every live agent; returns what was removed."""
    async with db() as session:
        live = await live_agents(session, timeout)
    removed: list[Removed] = []
    for node_id, address in live.items():
        try:
            removed += await _sweep_node(db, agents.client(address), node_id, vmid_range)
        except (AgentUnreachable, AgentError) as exc:
            log.info("VM sweep: node %s not checked: %s", address.node_name, exc)
    return removed


async def _sweep_node(
    db: async_sessionmaker[AsyncSession], agent: AgentClient, node_id: int, vmid_range: tuple[int, int]
) -> list[Removed]:
    listing = await agent.list_vms(*vmid_range)
    node = listing.node
    async with db() as session:
        held = await accounted(session, node_id)
    removed: list[Removed] = []
    for vmid in unaccounted(listing.vms, held):
        try:
            answer = await agent.delete_vm(vmid, ANY_OF_OURS, if_idle=True)
        except AgentError as exc:
            if exc.error == ErrorSlug.VM_BUSY:
                log.info("VM sweep: VM %s on %s left for now: %s", vmid, node, exc.message)
            elif exc.error != ErrorSlug.NOT_OURS:  # someone else's VM in the range: not ours to judge
                log.warning("VM sweep: VM %s on %s not removed: %s", vmid, node, exc.message)
            continue
        if not answer.removed:
            continue
        why = f"{answer.how}, and no upload, sync task or instance in the database holds it"
        removed.append(Removed(node, vmid, str(answer.key), why))
        log.warning("VM sweep: removed VM %s on %s (made by import %s): %s", vmid, node, answer.key, why)
    return removed
