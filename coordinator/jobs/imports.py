"""The import job: a staged upload becomes a PVE template on its import node.

States of ``template_upload.status``: uploaded (queued) -> importing -> imported,
or failed with ``error_message``. Each step is recorded before the next one
starts, so a coordinator that restarts mid-import re-drives the same import
(the agent recognises it by its key) instead of starting over or losing it.
Every write is conditional on the upload still being queued or importing: a cascade
delete fails the upload meanwhile, and the job then stops without undoing that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.config import CoordinatorConfig
from coordinator.db.models import TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.db.types import utcnow
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.jobs.template_import import ImportOrder, drive_import, stop_agent_import
from coordinator.states import instance as instance_states
from coordinator.states import sync_task
from coordinator.states import template as template_states
from coordinator.states import upload as upload_states
from coordinator.states.instance import InstanceStatus
from coordinator.states.sync_task import SyncTaskStatus
from coordinator.states.upload import IMPORT_QUEUE, UploadStatus
from shared.backoff import exponential

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# An agent or PVE that failed the attempt is asked again after 5, 10, 20, 40 s (at most 2 min).
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 120.0


def import_key(template_id: int, upload_id: int) -> str:
    return f"t{template_id}-u{upload_id}"


class ImportJobs:
    def __init__(
        self,
        config: CoordinatorConfig,
        db: async_sessionmaker[AsyncSession],
        agents: AgentLinks,
        inventory: InventoryRefresher,
        on_imported: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_imported``: called once a version is available on its import node (the
        version pruner looks again: the versions beyond keep_versions may have changed)."""
        self.config = config
        self.db = db
        self.agents = agents
        self.inventory = inventory
        self.on_imported = on_imported

    async def _set(self, upload_id: int, statuses: tuple[UploadStatus, ...], **values: Any) -> bool:
        """Update the upload's counters (never its status: coordinator/states/upload.py) if
        its status is one of ``statuses``; whether it was."""
        async with self.db() as session:
            result = await session.execute(
                update(TemplateUpload)
                .where(TemplateUpload.id == upload_id, TemplateUpload.status.in_(statuses))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _retry_later(self, upload: TemplateUpload, reason: str) -> None:
        attempts = upload.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            await self.fail(upload.id, f"{reason} (gave up after {attempts} attempts)")
            return
        delay = exponential(attempts, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        log.warning("upload %s: %s; retrying in %.0f s", upload.id, reason, delay)
        await self._set(
            upload.id,
            IMPORT_QUEUE,
            attempts=attempts,
            error_message=reason,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    async def run(self, upload_id: int) -> None:
        """Drive one import until it is imported, failed, or postponed."""
        async with self.db() as session:
            upload = await session.get(TemplateUpload, upload_id)
            template = await session.get(VmTemplate, upload.template_id) if upload else None
        if upload is None or upload.status not in IMPORT_QUEUE:
            return
        if template is None:
            await self.fail(upload_id, "the template was deleted before its import")
            return
        if upload.status == UploadStatus.UPLOADED:
            async with self.db() as session:
                started = await upload_states.start_import(session, upload_id)
                await session.commit()
            if not started:
                return  # failed meanwhile (its template was deleted)
            log.info("upload %s: importing %s on %s", upload_id, upload.staged_name, upload.import_node_name)
        try:
            agent = await self.agents.for_node(upload.import_node_id)
        except NoLiveAgent as exc:
            await self._retry_later(upload, str(exc))
            return

        async def progress(pct: float) -> bool:
            return await self._set(upload_id, (UploadStatus.IMPORTING,), import_progress=int(pct))

        order = ImportOrder(
            node_name=upload.import_node_name,
            job=TemplateUpload,
            job_id=upload.id,
            key=import_key(template.id, upload.id),
            cluster_id=upload.cluster_id,
            vmid=upload.vmid,
            staged_name=upload.staged_name,
            storage=upload.storage_name,
            upload=upload,
            template=template,
        )
        end = await drive_import(
            agent, order, progress, db=self.db, inventory=self.inventory, config=self.config
        )
        if end.failed is None:
            await self.finish(upload, end.vmid, end.volume_id)
        elif end.final:
            await self.fail(upload_id, end.failed)
        else:
            await self._retry_later(upload, end.failed)

    async def finish(self, upload: TemplateUpload, vmid: int, volume_id: str) -> None:
        async with self.db() as session:
            if not await upload_states.imported(session, upload.id, vmid):
                # Failed meanwhile: a cascade delete removes the VM (the upload records it).
                log.info("upload %s: imported as VM %s, but no longer wanted", upload.id, vmid)
                return
            await instance_states.follow_import(
                session, upload.id, InstanceStatus.AVAILABLE, vmid=vmid, volume_id=volume_id
            )
            # The moment the contract's current_version moves (README, Versions).
            assert upload.template_id is not None
            current = await template_states.version_available(session, upload.template_id, upload.version)
            await session.commit()
        log.info("upload %s: imported as VM %s (%s)", upload.id, vmid, volume_id)
        if current and upload.version > 1:
            log.info("template %s: version %s is current", upload.template_id, upload.version)
        self.on_imported()
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
        await self._set(upload.id, upload_states.FINAL, staged_name="")

    async def give_up(self, upload_id: int, reason: str) -> None:
        """The job engine's verdict on a handler that kept raising: the upload fails, and an
        import its agent may still run is stopped."""
        async with self.db() as session:
            upload = await session.get(TemplateUpload, upload_id)
        if upload is None or upload.status not in IMPORT_QUEUE:
            return
        await self.fail(upload_id, reason)
        if upload.template_id is not None:
            key = import_key(upload.template_id, upload_id)
            await stop_agent_import(self.agents, upload.import_node_id, key, "the coordinator gave up on it")

    async def fail(self, upload_id: int, reason: str) -> None:
        async with self.db() as session:
            if not await upload_states.fail_import(session, upload_id, reason):
                return  # failed already (e.g. by a cascade delete, with its own reason)
            await instance_states.follow_import(session, upload_id, InstanceStatus.FAILED)
            # Its copies (an upload's sync_node_ids, a version's rollout) wait for an import
            # that will not come: they fail with its reason (a clone waiting for one with them).
            pending = await session.scalars(
                select(TemplateSyncTask).where(
                    TemplateSyncTask.upload_id == upload_id, TemplateSyncTask.status == SyncTaskStatus.PENDING
                )
            )
            for task in list(pending):
                await sync_task.fail(session, task, f"the image's import failed: {reason}", epoch=None)
            await session.commit()
            upload = await session.get(TemplateUpload, upload_id)
        log.warning("upload %s failed: %s", upload_id, reason)
        if upload is not None and upload.staged_name:
            await self._remove_staged(upload)
