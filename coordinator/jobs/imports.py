"""The import job: a staged upload becomes a PVE template on its import node.

States of ``template_upload.status``: uploaded (queued) -> importing -> imported,
or failed with ``error_message``. Each step is recorded before the next one
starts, so a coordinator that restarts mid-import re-drives the same import
(the agent recognises it by its key) instead of starting over or losing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.config import CoordinatorConfig
from coordinator.db.models import TemplateInstance, TemplateUpload, VmTemplate
from coordinator.db.types import utcnow
from coordinator.inventory.pve_client import PveError
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.vmids import NoFreeVmid, allocation_lock, held_by_us, lowest_free

log = logging.getLogger(__name__)

# Template defaults for the VM; every key can be overridden per upload (vm_config).
VM_DEFAULTS: dict[str, Any] = {
    "memory": 2048,
    "cores": 2,
    "scsihw": "virtio-scsi-single",
    "net0": "virtio,bridge=vmbr0",
    "ostype": "l26",
    "boot": "order=scsi0",
    "agent": "enabled=1",
    "serial0": "socket",
    "tags": "pvesphere",
}
MAX_ATTEMPTS = 5
POLL_SECONDS = 1.0


def import_key(template_id: int, upload_id: int) -> str:
    return f"t{template_id}-u{upload_id}"


def vm_name(template_name: str, template_id: int) -> str:
    """PVE wants a DNS name for a VM."""
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", template_name).strip("-.")[:63].strip("-.")
    return name or f"template-{template_id}"


class ImportJobs:
    def __init__(
        self,
        config: CoordinatorConfig,
        db: async_sessionmaker[AsyncSession],
        agents: AgentLinks,
        inventory: InventoryRefresher,
    ) -> None:
        self.config = config
        self.db = db
        self.agents = agents
        self.inventory = inventory

    async def _set(self, upload_id: int, **values: Any) -> None:
        async with self.db() as session:
            await session.execute(
                update(TemplateUpload).where(TemplateUpload.id == upload_id).values(**values)
            )
            await session.commit()

    async def _retry_later(self, upload: TemplateUpload, reason: str) -> None:
        attempts = upload.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            await self.fail(upload.id, f"{reason} (gave up after {attempts} attempts)")
            return
        delay = min(5 * 2 ** (attempts - 1), 120)
        log.warning("upload %s: %s; retrying in %ss", upload.id, reason, delay)
        await self._set(
            upload.id,
            attempts=attempts,
            error_message=reason,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    async def allocate_vmid(self, upload: TemplateUpload, exclude: set[int]) -> int:
        async with allocation_lock():
            used = await self.inventory.used_vmids(upload.cluster_id)
            async with self.db() as session:
                used |= await held_by_us(session, upload.cluster_id)
                vmid = lowest_free(
                    used | exclude, self.config.template_vmid_min, self.config.template_vmid_max
                )
                await session.execute(
                    update(TemplateUpload).where(TemplateUpload.id == upload.id).values(vmid=vmid)
                )
                await session.commit()
        log.info("upload %s: VMID %s chosen", upload.id, vmid)
        return vmid

    async def run(self, upload_id: int) -> None:
        """Drive one import until it is imported, failed, or postponed."""
        async with self.db() as session:
            upload = await session.get(TemplateUpload, upload_id)
            template = await session.get(VmTemplate, upload.template_id) if upload else None
        if upload is None or upload.status not in ("uploaded", "importing"):
            return
        if template is None:
            await self.fail(upload_id, "the template was deleted before its import")
            return
        if upload.status == "uploaded":
            await self._set(upload_id, status="importing", import_progress=0)
            log.info("upload %s: importing %s on %s", upload_id, upload.staged_name, upload.import_node_name)
        try:
            agent = await self.agents.for_node(upload.import_node_id)
        except NoLiveAgent as exc:
            await self._retry_later(upload, str(exc))
            return

        vmid = upload.vmid
        tried: set[int] = set()
        options = {**VM_DEFAULTS, **json.loads(upload.vm_config or "{}")}
        name = str(options.pop("name", "") or vm_name(template.template_name, template.id))
        while True:
            try:
                if vmid is None:
                    vmid = await self.allocate_vmid(upload, tried)
                request = {
                    "key": import_key(template.id, upload.id),
                    "vmid": vmid,
                    "staged_name": upload.staged_name,
                    "storage": upload.storage_name,
                    "name": name,
                    "description": template.description,
                    "options": options,
                }
                op = await agent.start_import(request)
                while op["state"] == "running":
                    await self._set(upload_id, import_progress=int(op["progress"]))
                    await asyncio.sleep(POLL_SECONDS)
                    op = await agent.get_import(request["key"])
            except (AgentUnreachable, AgentError) as exc:
                await self._retry_later(upload, f"agent of {upload.import_node_name}: {exc}")
                return
            except NoFreeVmid as exc:
                await self.fail(upload_id, str(exc))
                return
            except PveError as exc:
                await self._retry_later(upload, f"reading VMIDs from PVE: {exc.message}")
                return
            if op["state"] == "done":
                await self.finish(upload, vmid, str(op.get("volume_id") or ""))
                return
            if op.get("error_kind") == "vmid_taken" and len(tried) < 20:
                log.info("upload %s: VMID %s was taken meanwhile; choosing another", upload_id, vmid)
                tried.add(vmid)
                vmid = None
                continue
            if op.get("error_kind") == "interrupted":
                await self._retry_later(upload, str(op.get("error")))
                return
            await self.fail(upload_id, f"import on {upload.import_node_name} failed: {op.get('error')}")
            return

    async def finish(self, upload: TemplateUpload, vmid: int, volume_id: str) -> None:
        async with self.db() as session:
            await session.execute(
                update(TemplateUpload)
                .where(TemplateUpload.id == upload.id)
                .values(
                    status="imported",
                    import_progress=100,
                    vmid=vmid,
                    error_message=None,
                    next_attempt_at=None,
                )
            )
            await session.execute(
                update(TemplateInstance)
                .where(
                    TemplateInstance.upload_id == upload.id,
                    TemplateInstance.status == "importing",
                )
                .values(status="available", vmid=vmid, volume_id=volume_id)
            )
            await session.commit()
        log.info("upload %s: imported as VM %s (%s)", upload.id, vmid, volume_id)
        if upload.is_shared:
            # Shared storage holds the disk now; the staged copy is not needed by anyone.
            await self._remove_staged(upload)

    async def _remove_staged(self, upload: TemplateUpload) -> None:
        try:
            agent = await self.agents.for_node(upload.import_node_id)
            await agent.delete_staged(upload.staged_name)
        except (NoLiveAgent, AgentUnreachable, AgentError) as exc:
            log.warning("upload %s: staged image not removed yet: %s", upload.id, exc)
            return
        # Forget the name, so that a cascade delete does not need that agent for a file that is gone.
        await self._set(upload.id, staged_name="")

    async def fail(self, upload_id: int, reason: str) -> None:
        async with self.db() as session:
            upload = await session.get(TemplateUpload, upload_id)
            if upload is None:
                return
            upload.status = "failed"
            upload.error_message = reason
            upload.next_attempt_at = None
            await session.execute(
                update(TemplateInstance)
                .where(TemplateInstance.upload_id == upload_id, TemplateInstance.status == "importing")
                .values(status="failed")
            )
            await session.commit()
        log.warning("upload %s failed: %s", upload_id, reason)
        if upload.staged_name:
            await self._remove_staged(upload)
