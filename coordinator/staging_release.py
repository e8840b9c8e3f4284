"""Whether an agent may evict a staged copy, and forgetting the copies that went.

The coordinator knows what each node holds from its rows: an upload's ``staged_name`` on
its import node, a completed sync task's ``staged_name`` on its target. Those are the
sources the sync scheduler picks from. An agent over its staging budget asks here before
it evicts a copy (agent/eviction.py); the answer is yes only if no work needs the copy,
and then the row forgets the name in the same transaction, so that no sync is planned
from a copy that is going. One path: the scheduler never learns of copies any other way.

PVE's disk of a template is not exported back into an image (the sync sends the upload's
bytes, checked against its sha256), so the last copy of a live template's image is never
released: without it the template could not be synced to another node.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.agents.registry import live_agents
from coordinator.db.models import TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.states import sync_task
from coordinator.states.upload import IMPORT_QUEUE, UploadStatus
from shared.staged_names import STAGED_NAME

# An upload still on its way to being a template: its staged copy is what it imports.
UPLOADING = (UploadStatus.UPLOADING, *IMPORT_QUEUE)
# One decision at a time in this coordinator: two nodes must not each let their copy go
# counting on the other's (MariaDB also locks the upload's row, for other coordinators).
_DECIDING = asyncio.Lock()


@dataclass(frozen=True)
class HeldCopy:
    node_id: int
    node_name: str
    task_id: int | None  # the sync task that brought it; None: the upload's own image


@dataclass(frozen=True)
class TaskState:
    task_id: int
    status: str
    target_node_id: int
    upstream: tuple[str, ...]  # the nodes that send in its attempt: source, then relays


def why_needed(
    copy: HeldCopy,
    upload_status: str,
    template_live: bool,
    tasks: list[TaskState],
    other_holders: set[int],
    live_nodes: set[int],
) -> str | None:
    """Why work needs this copy, or None if it may go (pure)."""
    if copy.task_id is None and upload_status in UPLOADING:
        return f"the upload is {upload_status}: its import reads this copy"
    for task in tasks:
        if task.task_id == copy.task_id and task.status in sync_task.ACTIVE:
            return f"sync task {task.task_id} is {task.status}: this is its copy"
        if task.status == "syncing" and copy.node_name in task.upstream:
            return f"sync task {task.task_id} sends from this copy"
    if template_live and not other_holders:
        return (
            "it is the last staged copy of the template's image (PVE's disk is not exported "
            "back into an image, so a later sync needs this copy)"
        )
    waiting = [t.task_id for t in tasks if t.status == "pending"]
    if waiting and not other_holders & live_nodes:
        return f"pending sync task {waiting[0]} needs it: no live node holds another copy"
    return None


async def release_copy(
    session: AsyncSession, node_name: str, name: str, agent_timeout: float
) -> tuple[bool, str]:
    """The agent of ``node_name`` asks to evict ``name``: (released, why). Commits."""
    async with _DECIDING:
        released, reason = await _decide(session, node_name, name, agent_timeout)
        await session.commit()
        return released, reason


async def _decide(session: AsyncSession, node_name: str, name: str, agent_timeout: float) -> tuple[bool, str]:
    match = STAGED_NAME.fullmatch(name)
    if match is None:
        return True, "not a staged image name the coordinator records"
    kind, number = match.group(1), int(match.group(2))
    not_recorded = True, f"the coordinator does not count {name} as a copy on {node_name}"
    task: TemplateSyncTask | None = None
    if kind == "upload":
        upload_id = number
    else:
        task = await session.get(TemplateSyncTask, number)
        if task is None or task.target_node_name != node_name:
            return not_recorded
        if task.staged_name != name and task.status not in sync_task.ACTIVE:
            return not_recorded
        upload_id = task.upload_id
    upload = await session.get(TemplateUpload, upload_id, with_for_update=True, populate_existing=True)
    if upload is None:
        return not_recorded
    if task is None and upload.import_node_name != node_name:
        return not_recorded
    if task is None and upload.staged_name != name and upload.status not in UPLOADING:
        return not_recorded  # (while uploading, the name may not be recorded yet: it stays)
    copy = (
        HeldCopy(upload.import_node_id, node_name, None)
        if task is None
        else HeldCopy(task.target_node_id, node_name, task.id)
    )
    all_tasks = list(
        await session.scalars(select(TemplateSyncTask).where(TemplateSyncTask.upload_id == upload_id))
    )
    others = {
        t.target_node_id
        for t in all_tasks
        if t.status == "completed" and t.staged_name and t.id != copy.task_id
    }
    if upload.staged_name and task is not None:
        others.add(upload.import_node_id)
    template = await session.get(VmTemplate, upload.template_id) if upload.template_id else None
    tasks = [
        TaskState(t.id, t.status, t.target_node_id, tuple(t.upstream_nodes.split(",")))
        for t in all_tasks
        if t.status in sync_task.ACTIVE
    ]
    live = set(await live_agents(session, timedelta(seconds=agent_timeout)))
    reason = why_needed(
        copy, upload.status, template is not None and template.deleted_at is None, tasks, others, live
    )
    if reason is not None:
        return False, reason
    await forget_copy(session, name)
    return True, f"no pending or running work needs it; {len(others)} other node(s) hold the image"


async def forget_copy(session: AsyncSession, name: str) -> None:
    """No node is counted as holding ``name`` any more (evicted, or found missing)."""
    await session.execute(
        update(TemplateUpload).where(TemplateUpload.staged_name == name).values(staged_name="")
    )
    await session.execute(
        update(TemplateSyncTask).where(TemplateSyncTask.staged_name == name).values(staged_name="")
    )
