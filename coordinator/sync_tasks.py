"""Creating sync tasks: at most one active task per (template, version, node), never a duplicate."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import PveNode, PveStorage, TemplateInstance, TemplateSyncTask, TemplateUpload
from coordinator.states import instance as instance_states
from coordinator.states import sync_task
from coordinator.states.instance import InstanceStatus, instance_of
from coordinator.upload_plan import Target
from shared.messages.transfers import ManifestView, Seed
from shared.tickets import TicketSigner

log = logging.getLogger(__name__)


@dataclass
class Planned:
    task: TemplateSyncTask | None
    node: PveNode
    skipped_reason: str | None = None


async def create_sync_tasks(
    session: AsyncSession,
    upload: TemplateUpload,
    source: PveNode,
    targets: list[Target],
    actor: str,
) -> list[Planned]:
    """Pending tasks (and pending instances) for ``targets``; the caller commits.

    A node with an active task gets that task back; a node that already has the
    template available is skipped and said so.
    """
    assert upload.template_id is not None
    return [await _plan_target(session, upload, source, target, actor) for target in targets]


async def _plan_target(
    session: AsyncSession, upload: TemplateUpload, source: PveNode, target: Target, actor: str
) -> Planned:
    node = target.node
    active = await session.scalar(
        select(TemplateSyncTask).where(
            TemplateSyncTask.template_id == upload.template_id,
            TemplateSyncTask.version == upload.version,
            TemplateSyncTask.target_node_id == node.id,
            TemplateSyncTask.status.in_(sync_task.ACTIVE),
        )
    )
    if active is not None:
        return Planned(active, node)
    instance = await _instance_on(session, upload, node.id)
    if instance is not None and instance.status == InstanceStatus.AVAILABLE:
        held = f"version {upload.version}, VM {instance.vmid}"
        return Planned(None, node, f"{node.node_name} already has this template ({held})")
    task = sync_task.new_task(
        template_id=upload.template_id,
        version=upload.version,
        upload_id=upload.id,
        cluster_id=upload.cluster_id,
        source_node_id=source.id,
        source_node_name=source.node_name,
        target_node_id=node.id,
        target_node_name=node.node_name,
        storage_name=target.storage.storage_name,
        bytes_total=upload.virtual_size or upload.file_size,  # (a copy moves the guest view)
        creator=actor,
    )
    session.add(task)
    await session.flush()
    await _instance_awaits(session, instance, task, upload, target, actor)
    return Planned(task, node)


async def _instance_on(
    session: AsyncSession, upload: TemplateUpload, node_id: int
) -> TemplateInstance | None:
    """The node's instance of ``upload``'s version, if it has one (of any status)."""
    return await session.scalar(
        select(TemplateInstance).where(
            TemplateInstance.template_id == upload.template_id,
            TemplateInstance.version == upload.version,
            TemplateInstance.node_id == node_id,
        )
    )


async def instance_awaits_retry(session: AsyncSession, task: TemplateSyncTask, actor: str) -> str | None:
    """A retried canceled task's target gets its instance back (the cancel removed it), as a
    new task's would; why not, when the node has the version available meanwhile (the caller
    refuses the retry then, as when its storage went)."""
    upload = await session.get(TemplateUpload, task.upload_id)
    node = await session.get(PveNode, task.target_node_id)
    assert upload is not None and node is not None
    instance = await _instance_on(session, upload, node.id)
    if instance is not None and instance.status == InstanceStatus.AVAILABLE:
        return f"{node.node_name} already has version {task.version} of this template (VM {instance.vmid})"
    storage = await session.scalar(
        select(PveStorage).where(PveStorage.node_id == node.id, PveStorage.storage_name == task.storage_name)
    )
    if storage is None:
        return f"{node.node_name} no longer has storage {task.storage_name!r}"
    await _instance_awaits(session, instance, task, upload, Target(node, storage), actor)
    return None


async def _instance_awaits(
    session: AsyncSession,
    instance: TemplateInstance | None,
    task: TemplateSyncTask,
    upload: TemplateUpload,
    target: Target,
    actor: str,
) -> None:
    """The target's instance waits for ``task``: a new one, or the one a failed copy left."""
    if instance is None:
        session.add(
            instance_of(
                InstanceStatus.PENDING,
                upload,
                target.node,
                target.storage,
                actor,
                is_shared=False,
                sync_task_id=task.id,
            )
        )
    elif not await instance_states.await_sync(session, instance.id, task.id, upload.id):
        log.warning(
            "instance %s on %s is %s: not linked to sync task %s",
            instance.id,
            target.node.node_name,
            instance.status,
            task.id,
        )


# Earlier versions named as seeds per hop, newest first (the target indexes each once).
MAX_SEEDS = 4


async def seeds_for(session: AsyncSession, task: TemplateSyncTask) -> list[Seed]:
    """What the task's target holds of the template already: its available instances of
    other uploads (earlier versions), whose chunks the copy need not send."""
    rows = (
        await session.execute(
            select(TemplateInstance.vmid, TemplateInstance.volume_id)
            .where(
                TemplateInstance.template_id == task.template_id,
                TemplateInstance.node_id == task.target_node_id,
                TemplateInstance.upload_id != task.upload_id,
                TemplateInstance.status == InstanceStatus.AVAILABLE,
                TemplateInstance.vmid.is_not(None),
                TemplateInstance.volume_id != "",
            )
            .order_by(TemplateInstance.id.desc())
            .limit(MAX_SEEDS)
        )
    ).all()
    return [Seed(vmid=vmid, volume_id=volume_id) for vmid, volume_id in rows if vmid]


def ticket_for(signer: TicketSigner, task: TemplateSyncTask, manifest: ManifestView) -> str:
    """The signed ticket that lets a sender deliver this attempt's copy to the task's target:
    the image as the guest sees it (raw, its virtual size), described by ``manifest`` (the
    target checks every field: agent/transfer/receive.py)."""
    assert manifest.digest is not None and manifest.image_sha256 is not None
    return signer.issue(
        task_id=task.id,
        task_uid=task.uid,
        epoch=task.epoch,
        node=task.target_node_name,
        size=manifest.size,
        sha256=manifest.image_sha256,
        manifest=manifest.digest,
        fmt="raw",
    )
