"""The database side of an upload: reserve the name, record the staged image, or give up.

The template row is created before the first byte is streamed (it reserves the
name: of two uploads of one name, one wins and one gets 409). If the upload
does not end with a valid staged image, the template row goes again and only a
``failed`` upload record stays behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.db.models import ResumableUpload, TemplateInstance, TemplateUpload, VmTemplate
from coordinator.db.types import utcnow
from coordinator.errors import Conflict
from coordinator.jobs import engine
from coordinator.states import upload as upload_states
from coordinator.states.instance import InstanceStatus, instance_of
from coordinator.states.template import new_template
from coordinator.states.upload import UploadStatus, new_upload
from coordinator.sync_tasks import Planned, create_sync_tasks
from coordinator.upload_plan import UploadPlan
from shared.error_slugs import ErrorSlug
from shared.messages.uploads import Staged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """What an upload's row records of its request: the file's label and declared format, the
    VM options, the description (a new template's, or the new version's), and who asked; the
    row is leased to this process for ``lease`` seconds while the image streams."""

    file_name: str
    fmt: str
    vm_config: dict[str, Any]
    description: str
    actor: str
    lease: float


async def reserve(
    db: async_sessionmaker[AsyncSession], plan: UploadPlan, template_name: str, incoming: Incoming
) -> TemplateUpload:
    """Template + upload rows (status uploading), leased to this process while it streams."""
    async with db() as session:
        template = new_template(
            template_name,
            cluster_id=plan.cluster.id,
            description=incoming.description,
            creator=incoming.actor,
            modifier=incoming.actor,
        )
        session.add(template)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(
                ErrorSlug.TEMPLATE_NAME_TAKEN,
                f"template name {template_name!r} is already used in cluster {plan.cluster.cluster_name!r}",
            ) from None
        upload = _new_upload(plan, template, 1, incoming)
        session.add(upload)
        await session.commit()
        return upload


async def reserve_version(
    db: async_sessionmaker[AsyncSession], plan: UploadPlan, template: VmTemplate, incoming: Incoming
) -> TemplateUpload:
    """The upload row of the template's next version (status uploading), leased to this
    process while it streams. The unique (template, version) key lets one of two concurrent
    requests have the number; the other gets 409."""
    async with db() as session:
        newest = await session.scalar(
            select(func.max(TemplateUpload.version)).where(TemplateUpload.template_id == template.id)
        )
        version = int(newest or 0) + 1
        upload = _new_upload(plan, template, version, incoming)
        session.add(upload)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(
                ErrorSlug.VERSION_TAKEN,
                f"version {version} of template {template.id} is being made by another request; "
                "retry when it is stored",
            ) from None
        return upload


def _new_upload(plan: UploadPlan, template: VmTemplate, version: int, incoming: Incoming) -> TemplateUpload:
    return new_upload(
        engine.OWNER,
        incoming.lease,
        template_id=template.id,
        version=version,
        description=incoming.description,
        template_name=template.template_name,
        cluster_id=plan.cluster.id,
        storage_id=plan.storage.id,
        storage_name=plan.storage.storage_name,
        storage_type=plan.storage.type,
        is_shared=plan.storage.shared,
        import_node_id=plan.import_node.id,
        import_node_name=plan.import_node.node_name,
        file_name=incoming.file_name,
        file_format=incoming.fmt,
        vm_config=json.dumps(incoming.vm_config),
        creator=incoming.actor,
    )


async def abandon(db: async_sessionmaker[AsyncSession], upload_id: int, reason: str) -> None:
    """No valid staged image came of it: keep a failed record, remove the template row (a
    first upload's: a new version's template stays as it was, the number free again)."""
    async with db() as session:
        row = (
            await session.execute(
                select(TemplateUpload.template_id, TemplateUpload.version).where(
                    TemplateUpload.id == upload_id
                )
            )
        ).first()
        template_id, version = row if row is not None else (None, 1)
        if not await upload_states.abandon(session, upload_id, reason):
            return  # not uploading (any more): stored, or abandoned already
        if template_id is not None and version == 1:
            await session.execute(delete(TemplateInstance).where(TemplateInstance.template_id == template_id))
            await session.execute(delete(VmTemplate).where(VmTemplate.id == template_id))
        await session.commit()
    log.warning("upload %s abandoned: %s", upload_id, reason)


async def record_staged(
    db: async_sessionmaker[AsyncSession],
    upload_id: int,
    plan: UploadPlan,
    staged: Staged,
    actor: str,
) -> list[Planned]:
    """The image is stored and valid: queue the import, create instances and sync tasks."""
    async with db() as session:
        stored = await upload_states.stored(
            session,
            upload_id,
            staged_name=staged.staged_name,
            size=staged.size,
            sha256=staged.sha256,
            virtual_size=staged.virtual_size,
        )
        if not stored:  # given up meanwhile: its lease expired (coordinator/uploads.expire_abandoned)
            raise Conflict(
                ErrorSlug.UPLOAD_ABANDONED,
                f"upload {upload_id} was given up while it streamed; upload the image again",
            )
        upload = await session.get(TemplateUpload, upload_id)
        assert upload is not None and upload.template_id is not None
        for target in plan.instance_targets:
            session.add(
                instance_of(
                    InstanceStatus.IMPORTING,
                    upload,
                    target.node,
                    target.storage,
                    actor,
                    is_shared=plan.storage.shared,
                    is_primary=target.node.id == plan.import_node.id,
                )
            )
        planned = await create_sync_tasks(session, upload, plan.import_node, plan.sync_targets, actor)
        await session.commit()
    log.info(
        "upload %s staged on %s: %s bytes, sha256 %s",
        upload_id,
        plan.import_node.node_name,
        staged.size,
        staged.sha256,
    )
    return planned


INTERRUPTED = "upload interrupted: the coordinator stopped while receiving it"
EXPIRED = "resumable upload expired: no PATCH came before its Upload-Expires"


async def expire_abandoned(db: async_sessionmaker[AsyncSession], agents: AgentLinks) -> int:
    """Uploads whose streaming coordinator died (lease expired while uploading), and
    resumable uploads idle past their expiry (coordinator/resumable.py: their lease).

    The import node's agent is asked to remove whatever the upload left there: a
    coordinator that stopped after the file was stored never learned its name.
    """
    async with db() as session:
        ids = list(
            await session.scalars(
                select(TemplateUpload.id).where(
                    TemplateUpload.status == UploadStatus.UPLOADING,
                    TemplateUpload.lease_expires_at < utcnow(),
                )
            )
        )
    expired = 0
    for upload_id in ids:
        async with db() as session:
            if not await engine.claim(session, TemplateUpload, upload_id, 60):
                continue
            upload = await session.get(TemplateUpload, upload_id)
            node_id = upload.import_node_id if upload else None
            resumable = await session.get(ResumableUpload, upload_id) is not None
        if node_id is not None:
            try:
                agent = await agents.for_node(node_id)
                await agent.delete_upload(upload_id)
            except (NoLiveAgent, AgentError, AgentUnreachable) as exc:
                log.warning("upload %s: its staged files could not be removed now: %s", upload_id, exc)
        try:
            await abandon(db, upload_id, EXPIRED if resumable else INTERRUPTED)
        except IntegrityError as exc:  # (a row that still points at its template): the others go on
            log.error("upload %s could not be given up: %s", upload_id, exc.orig)
            continue
        expired += 1
    return expired
