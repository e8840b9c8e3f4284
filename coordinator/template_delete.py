"""Cascade delete: every instance's VM through its agent, the stored images, the rows.

Stored images are the upload's staged file on its import node and every copy a sync
task received on its target.

The template is hidden first (so no new work starts on it), then each VM is
destroyed and its instance marked deleted as it goes. A failure stops the
delete with the reason; asking again continues from where it stopped.

An import that is queued or running is stopped: its upload fails ("template deleted
during its import") and its agent cancels the PVE task and removes the unfinished VM.
An upload still streaming in, or a sync task copying, makes the delete answer 409.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.api.errors import ApiError, not_found
from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.db.types import utcnow
from coordinator.jobs.imports import import_key

log = logging.getLogger(__name__)
IMPORT_STOPPED = "template deleted during its import"


@dataclass
class CascadeResult:
    removed_vms: list[dict[str, object]] = field(default_factory=list)
    removed_images: int = 0


def key_prefix(template_id: int) -> str:
    """Matches the marker of every VM made for this template (imports and syncs)."""
    return f"t{template_id}-"


async def _hide(session: AsyncSession, template: VmTemplate, actor: str) -> None:
    if template.deleted_at is None:
        template.deleted_at = utcnow()
        template.name_key = None
        template.modifier = actor


async def soft_delete(db: async_sessionmaker[AsyncSession], template_id: int, actor: str) -> None:
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        if template is None or template.deleted_at is not None:
            raise not_found("template", template_id)
        await _hide(session, template, actor)
        await session.commit()


async def cascade_delete(
    db: async_sessionmaker[AsyncSession], agents: AgentLinks, template_id: int, actor: str
) -> CascadeResult:
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        if template is None:
            raise not_found("template", template_id)
        uploading = await session.scalar(
            select(TemplateUpload.id).where(
                TemplateUpload.template_id == template_id, TemplateUpload.status == "uploading"
            )
        )
        if uploading is not None:
            raise ApiError(
                409,
                "upload_running",
                f"template {template_id} is being uploaded (upload {uploading}); retry when it is stored",
            )
        # Pending tasks are cancelled here; running ones make the delete wait (409).
        await session.execute(
            update(TemplateSyncTask)
            .where(TemplateSyncTask.template_id == template_id, TemplateSyncTask.status == "pending")
            .values(status="canceled", active_key=None, error_message="template deleted")
        )
        running = await session.scalar(
            select(TemplateSyncTask.id).where(
                TemplateSyncTask.template_id == template_id,
                TemplateSyncTask.status.in_(("syncing", "importing")),
            )
        )
        if running is not None:
            await session.rollback()
            raise ApiError(
                409,
                "sync_running",
                f"sync task {running} of template {template_id} is running; cancel it or wait",
            )
        # Its import job sees this and stops; the agent is told below.
        importing = list(
            await session.scalars(
                select(TemplateUpload).where(
                    TemplateUpload.template_id == template_id,
                    TemplateUpload.status.in_(("uploaded", "importing")),
                )
            )
        )
        for upload in importing:
            upload.status, upload.error_message, upload.next_attempt_at = "failed", IMPORT_STOPPED, None
        await _hide(session, template, actor)
        await session.commit()
        instances = list(
            await session.scalars(
                select(TemplateInstance).where(
                    TemplateInstance.template_id == template_id, TemplateInstance.status != "deleted"
                )
            )
        )
        staged = list(
            await session.scalars(
                select(TemplateUpload).where(
                    TemplateUpload.template_id == template_id, TemplateUpload.staged_name != ""
                )
            )
        )
        # Copies (whole or partial) that sync tasks left on their targets; epoch 0 never started.
        copies = list(
            await session.scalars(
                select(TemplateSyncTask).where(
                    TemplateSyncTask.template_id == template_id, TemplateSyncTask.epoch > 0
                )
            )
        )
        # An import that failed after PVE created its VM (e.g. the template conversion
        # failed) leaves that VM behind with no available instance pointing at it.
        half_made = list(
            await session.scalars(
                select(TemplateUpload).where(
                    TemplateUpload.template_id == template_id,
                    TemplateUpload.status == "failed",
                    TemplateUpload.vmid.is_not(None),
                )
            )
        )

    for upload in importing:
        await _stop_import(agents, template_id, upload)

    result = CascadeResult()
    # One VM per (node that owns it, vmid): a shared-storage template has a single VM,
    # owned by the primary instance's node; the other instances are views of it.
    owners = [i for i in instances if i.vmid is not None and (i.is_primary or not i.is_shared)]
    for inst in owners:
        assert inst.vmid is not None
        answer = await _delete_vm(agents, inst.node_id, inst.node_name, inst.vmid, template_id)
        async with db() as session:
            done = [inst.id]
            if inst.is_shared:
                done = [i.id for i in instances if i.is_shared and i.vmid == inst.vmid]
            await session.execute(
                update(TemplateInstance)
                .where(TemplateInstance.id.in_(done))
                .values(status="deleted", modifier=actor)
            )
            await session.commit()
        result.removed_vms.append(
            {"node_name": inst.node_name, "vmid": inst.vmid, "existed": answer["removed"]}
        )
        log.info("template %s: VM %s on %s removed", template_id, inst.vmid, inst.node_name)

    covered = {(i.node_id, i.vmid) for i in owners}
    for upload in half_made:
        assert upload.vmid is not None
        if (upload.import_node_id, upload.vmid) in covered:
            continue
        try:
            answer = await _delete_vm(
                agents, upload.import_node_id, upload.import_node_name, upload.vmid, template_id
            )
        except ApiError as exc:
            if exc.error != "not_ours":
                raise
            # The import failed before creating its VM, and the VMID is someone else's now.
            answer = {"removed": False}
        async with db() as session:
            # The record no longer points at a VM: a retried delete does not look for it again.
            await session.execute(
                update(TemplateUpload).where(TemplateUpload.id == upload.id).values(vmid=None)
            )
            await session.commit()
        if answer["removed"]:
            result.removed_vms.append(
                {"node_name": upload.import_node_name, "vmid": upload.vmid, "existed": True}
            )
            log.info(
                "template %s: VM %s of failed upload %s on %s removed",
                template_id,
                upload.vmid,
                upload.id,
                upload.import_node_name,
            )

    for upload in staged:
        try:
            agent = await agents.for_node(upload.import_node_id)
            answer = await agent.delete_staged(upload.staged_name)
        except NoLiveAgent as exc:
            raise ApiError(503, "no_live_agent", f"cannot remove the staged image: {exc}") from None
        except (AgentUnreachable, AgentError) as exc:
            raise ApiError(
                503, "agent_failed", f"cannot remove the staged image on {upload.import_node_name}: {exc}"
            ) from None
        result.removed_images += int(bool(answer.get("removed")))
        async with db() as session:
            await session.execute(
                update(TemplateUpload).where(TemplateUpload.id == upload.id).values(staged_name="")
            )
            await session.commit()

    for task in copies:
        try:
            agent = await agents.for_node(task.target_node_id)
            answer = await agent.remove_receive(task.id, task.uid)
        except NoLiveAgent as exc:
            raise ApiError(503, "no_live_agent", f"cannot remove the synced copy: {exc}") from None
        except (AgentUnreachable, AgentError) as exc:
            raise ApiError(
                503, "agent_failed", f"cannot remove the synced copy on {task.target_node_name}: {exc}"
            ) from None
        result.removed_images += int(bool(answer.get("removed")))

    async with db() as session:
        await session.execute(delete(TemplateSyncTask).where(TemplateSyncTask.template_id == template_id))
        await session.execute(delete(TemplateInstance).where(TemplateInstance.template_id == template_id))
        await session.commit()
    log.info(
        "template %s deleted with %d VM(s) and %d staged image(s)",
        template_id,
        len(result.removed_vms),
        result.removed_images,
    )
    return result


async def _live_agent(agents: AgentLinks, node_id: int, doing: str) -> AgentClient:
    try:
        return await agents.for_node(node_id)
    except NoLiveAgent as exc:
        raise ApiError(503, "no_live_agent", f"cannot {doing}: {exc}; retry when it is back") from None


async def _stop_import(agents: AgentLinks, template_id: int, upload: TemplateUpload) -> None:
    """Cancel the upload's import on its agent: stops the PVE task, removes the unfinished VM."""
    node = upload.import_node_name
    agent = await _live_agent(agents, upload.import_node_id, f"stop the import on {node}")
    try:
        await agent.cancel_import(import_key(template_id, upload.id), "template deleted")
    except AgentUnreachable as exc:
        raise ApiError(503, "agent_failed", f"cannot stop the import on {node}: {exc}") from None
    except AgentError as exc:
        if exc.status != 404:  # 404: the import never reached the agent
            raise ApiError(502, "agent_failed", f"stopping the import on {node} failed: {exc}") from None
    log.info("template %s: import of upload %s on %s stopped", template_id, upload.id, node)


async def _delete_vm(
    agents: AgentLinks, node_id: int, node_name: str, vmid: int, template_id: int
) -> dict[str, Any]:
    """Destroy one of this template's VMs through its node's agent (absent counts as done)."""
    agent = await _live_agent(agents, node_id, f"delete VM {vmid}")
    try:
        answer: dict[str, Any] = await agent.delete_vm(vmid, key_prefix(template_id))
    except AgentUnreachable as exc:
        raise ApiError(503, "agent_failed", f"cannot delete VM {vmid} on {node_name}: {exc}") from None
    except AgentError as exc:
        raise ApiError(
            502 if exc.status != 409 else 409,
            "pve_delete_failed" if exc.status != 409 else exc.error,
            f"deleting VM {vmid} on {node_name} failed: {exc.message}",
        ) from None
    return answer
