"""Deleting one version of a template: its VMs on every node and its images, through the
agents, as a cascade delete removes a whole template (the same steps, coordinator/deletion_plan.py,
done by the same code, coordinator/template_delete.DeleteJobs.do_steps).

Asked for by ``DELETE /templates/{id}/versions/{v}`` or by ``keep_versions`` (the pruner,
coordinator/jobs/version_pruner.py). Refused (nothing changed) for the current version,
while an upload, sync task or clone of the version runs, and while linked clones use its
disks (naming them, as a cascade delete does). Otherwise the version's upload goes
``deleting`` (conditional: of two requests or replicas exactly one starts it; nothing new
starts on it from then: clones and syncs want an imported version), its pending sync tasks
are canceled, and an attempt removes every part it can. A part that cannot be removed now
(an agent down, PVE not answering) stays, with the version ``deleting``, and the pruner
tries again every round, on whichever replica holds the upload row's lease: each step is
idempotent on its agent. Once nothing is left the version's instance and task rows go and
its upload is ``deleted`` (kept: its number is never given again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.deletion_plan import plan
from coordinator.errors import Conflict, not_found
from coordinator.jobs import engine
from coordinator.states import sync_task
from coordinator.states import upload as upload_states
from coordinator.states.template import TemplateStatus
from coordinator.states.upload import UploadStatus
from coordinator.template_delete import (
    DeleteJobs,
    Outcome,
    deleting_conflict,
    refuse_linked_clones,
    refuse_under_running_work,
)
from shared.error_slugs import ErrorSlug

log = logging.getLogger(__name__)
# How long one attempt holds the version (its upload row's lease): longer than PVE takes to
# remove a VM on a slow node; an attempt cut off by a stop is taken over after it.
ATTEMPT_LEASE = 300.0


@dataclass
class VersionOutcome:
    template_id: int
    version: int
    done: bool
    removed_vms: list[dict[str, object]] = field(default_factory=list)
    removed_images: int = 0
    # Why parts are left (done False): the agents' or PVE's answers, in order.
    reasons: list[str] = field(default_factory=list)
    remaining: list[dict[str, object]] = field(default_factory=list)


async def version_upload(session: AsyncSession, template_id: int, version: int) -> TemplateUpload:
    """The upload of a version that exists (not deleted), or NotFound."""
    upload = await session.scalar(
        select(TemplateUpload).where(
            TemplateUpload.template_id == template_id,
            TemplateUpload.version == version,
            TemplateUpload.status != UploadStatus.DELETED,
        )
    )
    if upload is None:
        raise not_found(ErrorSlug.VERSION_NOT_FOUND, f"{version} of template {template_id}")
    return upload


async def start(
    db: async_sessionmaker[AsyncSession],
    template_id: int,
    version: int,
    in_pve: Callable[[int], Awaitable[set[int]]] | None,
) -> int:
    """Mark the version deleting (or find it deleting already): its upload's id. NotFound or
    Conflict, nothing changed, when it may not be deleted."""
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        if template is None or template.status == TemplateStatus.DELETED:
            raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, template_id)
        upload = await version_upload(session, template_id, version)
        if upload.status == UploadStatus.DELETING:
            return upload.id  # under way: this asks for another attempt
        if template.status == TemplateStatus.DELETING:
            raise deleting_conflict(template_id)
        if version == template.current_version:
            raise Conflict(
                ErrorSlug.VERSION_CURRENT,
                f"version {version} is the current version of template {template_id}; "
                "activate another version first",
            )
        if upload.status not in upload_states.FINAL:
            raise Conflict(
                ErrorSlug.UPLOAD_RUNNING,
                f"version {version} of template {template_id} is {upload.status}; wait for its import to end",
            )
        await refuse_under_running_work(session, template_id, version)
    await refuse_linked_clones(db, template_id, in_pve, version)
    async with db() as session:
        if await upload_states.start_deleting(session, upload.id):
            await sync_task.cancel_pending_of_template(session, template_id, version)
            log.info("template %s: deleting version %s", template_id, version)
        await session.commit()
    return upload.id


async def attempt(db: async_sessionmaker[AsyncSession], jobs: DeleteJobs, upload_id: int) -> VersionOutcome:
    """Remove every part of the deleting version that can be removed now; the version is
    deleted when nothing is left. Another holder of the version (a replica's attempt) makes
    this one do nothing (done False, its reason said)."""
    async with db() as session:
        upload = await session.get(TemplateUpload, upload_id)
        assert upload is not None and upload.template_id is not None
        template_id, version = upload.template_id, upload.version
        outcome = VersionOutcome(template_id, version, done=upload.status == UploadStatus.DELETED)
        if upload.status != UploadStatus.DELETING:
            return outcome
        if not await engine.claim(session, TemplateUpload, upload_id, ATTEMPT_LEASE):
            outcome.reasons.append("another coordinator is removing it now")
            return outcome
        steps = plan(
            await session.scalars(
                select(TemplateInstance).where(
                    TemplateInstance.template_id == template_id, TemplateInstance.version == version
                )
            ),
            [upload],
            await session.scalars(
                select(TemplateSyncTask).where(
                    TemplateSyncTask.template_id == template_id, TemplateSyncTask.version == version
                )
            ),
        )
    try:
        done = Outcome(done=False)
        left, reasons, _ = await jobs.do_steps(template_id, steps, done)
        outcome.removed_vms, outcome.removed_images = done.removed_vms, done.removed_images
        if left:
            outcome.reasons = list(reasons)
            outcome.remaining = [s.shown() for s in left]
            log.info("template %s: version %s waits: %s", template_id, version, "; ".join(reasons))
            return outcome
        async with db() as session:
            await session.execute(
                delete(TemplateSyncTask).where(
                    TemplateSyncTask.template_id == template_id, TemplateSyncTask.version == version
                )
            )
            await session.execute(
                delete(TemplateInstance).where(
                    TemplateInstance.template_id == template_id, TemplateInstance.version == version
                )
            )
            outcome.done = await upload_states.version_deleted(session, upload_id)
            await session.commit()
    finally:
        if not outcome.done:
            async with db() as session:
                await engine.release(session, TemplateUpload, upload_id)
                await session.commit()
    if outcome.done:
        log.info(
            "template %s: version %s deleted with %d VM(s) and %d image(s)",
            template_id,
            version,
            len(outcome.removed_vms),
            outcome.removed_images,
        )
    return outcome


async def deleting_versions(db: async_sessionmaker[AsyncSession]) -> list[int]:
    """The uploads of versions whose deletion is unfinished (the pruner's round finishes them)."""
    async with db() as session:
        return list(
            await session.scalars(
                select(TemplateUpload.id)
                .where(TemplateUpload.status == UploadStatus.DELETING)
                .order_by(TemplateUpload.id)
            )
        )
