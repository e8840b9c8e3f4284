"""A template's instance on one node (template_instance.status).

It follows the work that makes it: an upload's import (importing -> available, or failed),
or its sync task (pending -> syncing -> importing -> available, or failed; pending again
while the task waits for its next attempt). A cascade delete marks it deleted once its VM
is gone. A canceled or deleted sync task takes its unfinished instance row with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import PveNode, PveStorage, TemplateInstance, TemplateUpload
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class InstanceStatus(StrEnum):
    PENDING = "pending"
    SYNCING = "syncing"
    IMPORTING = "importing"
    AVAILABLE = "available"
    FAILED = "failed"
    DELETED = "deleted"


S = InstanceStatus
# What an instance row is created as: its upload's import queued, or its sync task pending.
INITIAL = (S.IMPORTING, S.PENDING)
TRANSITIONS = Transitions[InstanceStatus](
    {
        S.PENDING: frozenset({S.SYNCING, S.FAILED, S.DELETED}),
        S.SYNCING: frozenset({S.IMPORTING, S.PENDING, S.FAILED, S.DELETED}),
        S.IMPORTING: frozenset({S.AVAILABLE, S.PENDING, S.FAILED, S.DELETED}),
        S.FAILED: frozenset({S.PENDING, S.DELETED}),
        S.AVAILABLE: frozenset({S.DELETED}),
    }
)


def new_instance(status: InstanceStatus, **fields: Any) -> TemplateInstance:
    """An instance row, in one of the INITIAL statuses; the caller adds it."""
    if status not in INITIAL:
        raise ValueError(f"an instance starts {' or '.join(INITIAL)}, not {status}")
    return TemplateInstance(status=status, **fields)


def instance_of(
    status: InstanceStatus,
    upload: TemplateUpload,
    node: PveNode,
    storage: PveStorage,
    actor: str,
    **fields: Any,
) -> TemplateInstance:
    """A new instance of ``upload``'s version on ``node``'s ``storage`` (an import's or a
    sync task's), with ``fields`` besides."""
    return new_instance(
        status,
        template_id=upload.template_id,
        version=upload.version,
        upload_id=upload.id,
        cluster_id=upload.cluster_id,
        node_id=node.id,
        node_name=node.node_name,
        storage_id=storage.id,
        storage_name=storage.storage_name,
        creator=actor,
        modifier=actor,
        **fields,
    )


async def follow_sync_task(session: AsyncSession, task_id: int, status: InstanceStatus, **values: Any) -> int:
    """The instance of sync task ``task_id`` takes the task's new state."""
    return await move(
        session, TemplateInstance, TRANSITIONS, status, [TemplateInstance.sync_task_id == task_id], **values
    )


async def follow_import(session: AsyncSession, upload_id: int, status: InstanceStatus, **values: Any) -> int:
    """The instances an upload's import makes (those importing) become ``status``."""
    return await move(
        session,
        TemplateInstance,
        TRANSITIONS,
        status,
        [TemplateInstance.upload_id == upload_id],
        from_=(S.IMPORTING,),
        **values,
    )


async def await_sync(session: AsyncSession, instance_id: int, task_id: int, upload_id: int) -> bool:
    """An existing instance (not available: a failed earlier copy) waits for a new sync task."""
    moved = await move(
        session,
        TemplateInstance,
        TRANSITIONS,
        S.PENDING,
        [TemplateInstance.id == instance_id],
        sync_task_id=task_id,
        upload_id=upload_id,
        vmid=None,
    )
    return moved == 1


async def mark_deleted(session: AsyncSession, instance_ids: Iterable[int]) -> int:
    """Their VM is gone (a cascade delete)."""
    return await move(
        session, TemplateInstance, TRANSITIONS, S.DELETED, [TemplateInstance.id.in_(list(instance_ids))]
    )
