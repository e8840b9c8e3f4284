"""Creating sync tasks: at most one active task per (template, node), never a duplicate."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import PveNode, TemplateInstance, TemplateSyncTask, TemplateUpload
from coordinator.upload_plan import Target

ACTIVE = ("pending", "syncing", "importing")


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
    planned: list[Planned] = []
    for target in targets:
        node = target.node
        active = await session.scalar(
            select(TemplateSyncTask).where(
                TemplateSyncTask.template_id == upload.template_id,
                TemplateSyncTask.target_node_id == node.id,
                TemplateSyncTask.status.in_(ACTIVE),
            )
        )
        if active is not None:
            planned.append(Planned(active, node))
            continue
        instance = await session.scalar(
            select(TemplateInstance).where(
                TemplateInstance.template_id == upload.template_id,
                TemplateInstance.node_id == node.id,
            )
        )
        if instance is not None and instance.status == "available":
            planned.append(
                Planned(None, node, f"{node.node_name} already has this template (VM {instance.vmid})")
            )
            continue
        task = TemplateSyncTask(
            template_id=upload.template_id,
            upload_id=upload.id,
            cluster_id=upload.cluster_id,
            source_node_id=source.id,
            source_node_name=source.node_name,
            target_node_id=node.id,
            target_node_name=node.node_name,
            storage_name=target.storage.storage_name,
            status="pending",
            active_key=node.id,
            bytes_total=upload.file_size,
            creator=actor,
        )
        session.add(task)
        await session.flush()
        if instance is None:
            instance = TemplateInstance(
                template_id=upload.template_id,
                upload_id=upload.id,
                cluster_id=upload.cluster_id,
                node_id=node.id,
                node_name=node.node_name,
                storage_id=target.storage.id,
                storage_name=target.storage.storage_name,
                is_shared=False,
                creator=actor,
                modifier=actor,
            )
            session.add(instance)
        instance.status = "pending"
        instance.sync_task_id = task.id
        instance.upload_id = upload.id
        instance.vmid = None
        planned.append(Planned(task, node))
    return planned
