"""Sync tasks: start syncs of a local-storage template, list and follow them, retry, cancel, delete.

POST   /templates/{id}/sync                  {"target_node_ids": [2, 3]}
GET    /templates/sync-tasks                 page, page_size, template_id, status
GET    /templates/sync-tasks/{task_id}
POST   /templates/sync-tasks/{task_id}/retry     failed/canceled -> pending (the copy resumes)
POST   /templates/sync-tasks/{task_id}/cancel    pending/syncing -> canceled
DELETE /templates/sync-tasks/{task_id}           pending only
"""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from msgspec import Meta
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import NoLiveAgent
from coordinator.api import sync_task_reads
from coordinator.api.errors import ApiError, conflict, not_found
from coordinator.api.fast_json import ok_json, ok_page
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.api.sync_task_reads import SyncTaskOut
from coordinator.api.templates import load_workable_template, refuse_deleting
from coordinator.appkeys import AGENTS, DB, READS, SYNCS
from coordinator.db.models import (
    PveCluster,
    PveNode,
    PveStorage,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.races import create_or_return
from coordinator.states import sync_task
from coordinator.states.instance import InstanceStatus
from coordinator.states.sync_task import SyncTaskStatus, SyncTaskStatusName
from coordinator.states.upload import UploadStatus
from coordinator.sync_tasks import Planned, create_sync_tasks, instance_awaits_retry
from coordinator.upload_plan import sync_targets
from shared.error_slugs import ErrorSlug
from shared.validation import Input, Model

log = logging.getLogger(__name__)
routes = Routes("sync-tasks")


class SyncTaskBrief(Model):
    task_id: int
    target_node_id: int
    target_node_name: str
    status: str


class Skipped(Model):
    node_id: int
    node_name: str
    reason: str


class SyncRequest(Input):
    target_node_ids: Annotated[
        list[Annotated[int, Meta(ge=1)]], Meta(min_length=1, description="nodes to copy the template to")
    ]


class SyncStarted(Model):
    sync_tasks: list[SyncTaskBrief]
    skipped: list[Skipped]


class SyncTaskQuery(PageQuery):
    template_id: Annotated[int, Meta(ge=1)] | None = None
    status: SyncTaskStatusName | None = None


class StatusChange(Model):
    task_id: int
    status: str


def _with_name():  # type: ignore[no-untyped-def]
    # The name as a subquery per task, not a join: with a join MariaDB starts from the one
    # template and sorts all its tasks for a page; this way every plan walks the tasks' index.
    name = select(VmTemplate.template_name).where(VmTemplate.id == TemplateSyncTask.template_id)
    return select(TemplateSyncTask, name.scalar_subquery())


async def _load(session: AsyncSession, task_id: int) -> tuple[TemplateSyncTask, str]:
    row = (await session.execute(_with_name().where(TemplateSyncTask.id == task_id))).first()
    if row is None:
        raise not_found(ErrorSlug.SYNC_TASK_NOT_FOUND, task_id)
    return row[0], row[1]


@routes.post(
    "/templates/{id}/sync",
    role="operator",
    body=SyncRequest,
    response=SyncStarted,
    errors=(400, 404, 409),
)
async def sync_template(call: Call) -> SyncStarted:
    """Copy a local-storage template's current version to more nodes (one pending sync task
    per node).

    A node that already has an active task for the template gets that task back; a node
    that already has the template available is skipped and said so.
    """
    template, _ = await load_workable_template(call, call.path["id"])
    body: SyncRequest = call.body

    async def plan(session: AsyncSession) -> list[Planned]:
        upload = await session.scalar(
            select(TemplateUpload).where(
                TemplateUpload.template_id == template.id,
                TemplateUpload.version == template.current_version,
            )
        )
        if upload is None or upload.status == "failed":
            raise conflict(
                f"template {template.id} has no image to sync (its upload failed)", ErrorSlug.NO_IMAGE
            )
        if upload.is_shared:
            raise conflict(
                f"template {template.id} is on shared storage {upload.storage_name!r}: every node already "
                "sees it, there is nothing to sync",
                ErrorSlug.SHARED_STORAGE_NO_SYNC,
            )
        cluster = await session.get(PveCluster, upload.cluster_id)
        source = await session.get(PveNode, upload.import_node_id)
        storage_row = await session.get(PveStorage, upload.storage_id)
        assert cluster is not None and source is not None and storage_row is not None
        targets = await sync_targets(session, cluster, storage_row, source, body.target_node_ids, False)
        return await create_sync_tasks(session, upload, source, targets, call.actor)

    # Concurrent identical requests: one creates each task, the others get it back.
    planned = await create_or_return(call.app[DB], plan, f"sync of template {template.id}")
    call.app[SYNCS].wake()
    started = [
        SyncTaskBrief(
            task_id=p.task.id,
            target_node_id=p.node.id,
            target_node_name=p.node.node_name,
            status=p.task.status,
        )
        for p in planned
        if p.task is not None
    ]
    skipped = [
        Skipped(node_id=p.node.id, node_name=p.node.node_name, reason=p.skipped_reason or "")
        for p in planned
        if p.task is None
    ]
    return SyncStarted(sync_tasks=started, skipped=skipped)


@routes.get("/templates/sync-tasks", role="viewer", query=SyncTaskQuery, response=Page[SyncTaskOut])
async def list_sync_tasks(call: Call) -> web.Response:
    """Sync tasks, newest first; filter by template and status."""
    q: SyncTaskQuery = call.query
    total, tasks = await sync_task_reads.page(call.app[READS], q.template_id, q.status, q.page, q.page_size)
    return ok_page(total, q.page, q.page_size, tasks)


@routes.get("/templates/sync-tasks/{task_id}", role="viewer", response=SyncTaskOut, errors=(404,))
async def get_sync_task(call: Call) -> web.Response:
    """One sync task: state, progress (bytes and rate while copying), error."""
    task = await sync_task_reads.one(call.app[READS], call.path["task_id"])
    if task is None:
        raise not_found(ErrorSlug.SYNC_TASK_NOT_FOUND, call.path["task_id"])
    return ok_json(task)


def _not_failed(task_id: int, status: str) -> ApiError:
    return conflict(
        f"sync task {task_id} is {status}; only a failed or canceled task can be retried",
        ErrorSlug.NOT_FAILED,
    )


@routes.post(
    "/templates/sync-tasks/{task_id}/retry", role="operator", response=StatusChange, errors=(404, 409)
)
async def retry_sync_task(call: Call) -> StatusChange:
    """Try a failed or canceled task again; the bytes already verified at the target are
    kept (the copy resumes), unless the janitor removed them meanwhile (it starts over)."""
    async with call.app[DB]() as session:
        task, _ = await _load(session, call.path["task_id"])
        if task.status not in sync_task.RETRYABLE:
            raise _not_failed(task.id, task.status)
        template = await session.get(VmTemplate, task.template_id)
        assert template is not None
        refuse_deleting(template)
        await _refuse_deleting_version(session, task)
        canceled = task.status == SyncTaskStatus.CANCELED
        try:
            retried = await sync_task.retry(session, task.id)
            why_not = await instance_awaits_retry(session, task, call.actor) if retried and canceled else None
            if why_not is not None:
                await session.rollback()
                raise conflict(f"sync task {task.id} not retried: {why_not}", ErrorSlug.NOT_FAILED)
            await session.commit()
        except IntegrityError:
            raise conflict(
                f"another sync task of this template to {task.target_node_name} is active",
                ErrorSlug.SYNC_TASK_ACTIVE,
            ) from None
        if not retried:
            raise _not_failed(task.id, f"no longer {task.status}")
    call.app[SYNCS].wake()
    log.info("sync task %s to %s: retried by %s", task.id, task.target_node_name, call.actor)
    return StatusChange(task_id=task.id, status=SyncTaskStatus.PENDING)


async def _refuse_deleting_version(session: AsyncSession, task: TemplateSyncTask) -> None:
    upload = await session.get(TemplateUpload, task.upload_id)
    if upload is None or upload.status in (UploadStatus.DELETING, UploadStatus.DELETED):
        raise conflict(
            f"sync task {task.id}: version {task.version} of its template is being deleted",
            ErrorSlug.TEMPLATE_DELETING,
        )


async def _stop_copy(call: Call, task: TemplateSyncTask) -> None:
    """Stop the stream to the task's target now, keeping the bytes it verified for a retry
    (until the janitor's retention is over); best effort: the copy also stops at its next
    ticket or poll."""
    try:
        agent = await call.app[AGENTS].for_node(task.target_node_id)
        await agent.stop_receive(task.id, task.uid)
    except (NoLiveAgent, AgentError, AgentUnreachable) as exc:
        log.info(
            "sync task %s: the stream to %s not stopped at once: %s", task.id, task.target_node_name, exc
        )


async def _drop_copy(call: Call, task: TemplateSyncTask) -> None:
    """Remove what the task left on its target (partial copy); best effort."""
    try:
        agent = await call.app[AGENTS].for_node(task.target_node_id)
        await agent.remove_receive(task.id, task.uid)
    except (NoLiveAgent, AgentError, AgentUnreachable) as exc:
        log.warning("sync task %s: partial copy on %s not removed: %s", task.id, task.target_node_name, exc)


async def _forget_instance(session: AsyncSession, task: TemplateSyncTask) -> None:
    await session.execute(
        delete(TemplateInstance).where(
            TemplateInstance.sync_task_id == task.id, TemplateInstance.status != InstanceStatus.AVAILABLE
        )
    )


@routes.post(
    "/templates/sync-tasks/{task_id}/cancel", role="operator", response=StatusChange, errors=(404, 409)
)
async def cancel_sync_task(call: Call) -> StatusChange:
    """Stop a pending or running copy; the bytes it verified on the target stay for a retry
    until the janitor removes them (``keep_failed_copies_hours``)."""
    async with call.app[DB]() as session:
        task, _ = await _load(session, call.path["task_id"])
        reason = f"canceled by {call.actor}" if call.actor else "canceled"
        if not sync_task.cancelable(task.status) or not await sync_task.cancel(session, task.id, reason):
            now = "no longer pending or syncing" if sync_task.cancelable(task.status) else task.status
            raise conflict(
                f"sync task {task.id} is {now}; only pending or syncing tasks can be canceled",
                ErrorSlug.NOT_CANCELABLE,
            )
        await _forget_instance(session, task)
        await session.commit()
    await _stop_copy(call, task)
    call.app[SYNCS].wake()
    log.info("sync task %s to %s: canceled by %s", task.id, task.target_node_name, call.actor)
    return StatusChange(task_id=task.id, status=SyncTaskStatus.CANCELED)


@routes.delete("/templates/sync-tasks/{task_id}", role="operator", response=StatusChange, errors=(404, 409))
async def delete_sync_task(call: Call) -> StatusChange:
    """Delete a pending task (a running one must be canceled first)."""
    async with call.app[DB]() as session:
        task, _ = await _load(session, call.path["task_id"])
        if task.status != SyncTaskStatus.PENDING:
            raise conflict(
                f"sync task {task.id} is {task.status}; only a pending task can be deleted"
                + (" (cancel it first)" if task.status == SyncTaskStatus.SYNCING else ""),
                ErrorSlug.NOT_PENDING,
            )
        await _forget_instance(session, task)
        await session.delete(task)
        await session.commit()
    await _drop_copy(call, task)
    log.info("sync task %s to %s: deleted by %s", task.id, task.target_node_name, call.actor)
    return StatusChange(task_id=task.id, status="deleted")
