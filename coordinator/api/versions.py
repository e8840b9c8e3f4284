"""A template's versions (contract 6.1).

POST   /templates/{id}/versions                      a new version: an upload (multipart)
GET    /templates/{id}/versions                      every version, newest first
POST   /templates/{id}/versions/{version}/activate   make it current (roll back or forward)
DELETE /templates/{id}/versions/{version}            remove its VMs and images everywhere

A new version is an upload (coordinator/api/upload.py, the same checks, streaming, staged
record and import job) reserved as the template's next version on its storage's import
node, with the rollout's sync tasks (coordinator/upload_plan.plan_version). Its VM options
(vm_config) carry over from the current version unless the form gives them.
"""

from __future__ import annotations

import builtins
import logging
from collections import Counter
from datetime import timedelta
from typing import Annotated

import msgspec
from msgspec import Meta
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import uploads, version_delete
from coordinator.api.routing import Accepted, Call, Routes
from coordinator.api.templates import RemovedVm, load_live_template, load_workable_template
from coordinator.api.timefmt import UtcTime, whole_seconds
from coordinator.api.upload import (
    UPLOAD_FIELDS,
    UploadKind,
    UploadResult,
    check_vm_config,
    incoming_of,
    multipart_body,
    take_upload,
    upload_route,
)
from coordinator.appkeys import CONFIG, DB, DELETE_JOBS, INVENTORY, VERSIONS
from coordinator.clones_in_pve import still_in_pve
from coordinator.db.models import Clone, TemplateInstance, TemplateUpload, VmTemplate
from coordinator.errors import Conflict
from coordinator.states import template as template_states
from coordinator.states.clone import CloneStatus
from coordinator.states.instance import InstanceStatus
from coordinator.states.upload import LISTED, UploadStatus
from coordinator.upload_plan import UploadPlan, plan_version
from shared.error_slugs import ErrorSlug
from shared.text_fields import Description
from shared.validation import Input, Model
from shared.vm_config import VmConfig

log = logging.getLogger(__name__)
routes = Routes("templates")


class VersionForm(Input):
    description: Description = Description("")
    vm_config: VmConfig = msgspec.field(default_factory=VmConfig)
    wait: bool = False
    rollout: bool = True


VERSION_BODY_SCHEMA = multipart_body(
    ["file"],
    {
        "description": {**UPLOAD_FIELDS["description"], "description": "what this version is"},
        "vm_config": {
            **UPLOAD_FIELDS["vm_config"],
            "description": "as the upload's; left out, the current version's carry over",
        },
        "wait": UPLOAD_FIELDS["wait"],
        "rollout": {
            "type": "boolean",
            "default": True,
            "description": "sync the new version to every node that holds an earlier one",
        },
        "file": UPLOAD_FIELDS["file"],
    },
)


async def _plan(call: Call, form: VersionForm) -> UploadPlan:
    template, _ = await load_workable_template(call, call.path["id"])
    async with call.app[DB]() as session:
        plan = await plan_version(
            session,
            template,
            rollout=form.rollout,
            agent_timeout=timedelta(seconds=call.app[CONFIG].agent_timeout),
        )
        options = form.vm_config or await _current_vm_config(session, template)
    check_vm_config(options, plan)
    return plan


async def _current_vm_config(session: AsyncSession, template: VmTemplate) -> VmConfig:
    """The current version's VM options (a new version's, unless its form gives its own)."""
    raw = await session.scalar(
        select(TemplateUpload.vm_config).where(
            TemplateUpload.template_id == template.id, TemplateUpload.version == template.current_version
        )
    )
    return VmConfig.parse(raw or "{}")


async def _reserve(
    call: Call, form: VersionForm, plan: UploadPlan, file_name: str, fmt: str
) -> TemplateUpload:
    template, _ = await load_workable_template(call, call.path["id"])
    async with call.app[DB]() as session:
        options = form.vm_config or await _current_vm_config(session, template)
    incoming = incoming_of(call, file_name, fmt, options, form.description)
    return await uploads.reserve_version(call.app[DB], plan, template, incoming)


NEW_VERSION = UploadKind(VersionForm, _plan, _reserve, lambda form: form.wait)


@upload_route(routes, "/templates/{id}/versions", VERSION_BODY_SCHEMA)
async def upload_version(call: Call) -> UploadResult:
    """Upload a new version of a template (version N+1), checked and imported as an upload is,
    on the import node of the template's storage.

    Unless rollout=false, every other node holding an available instance of an earlier
    version gets a sync task for the new one (`sync_tasks`). The version becomes current
    when it is available on its import node (its upload `imported`). Form fields before the
    file; with wait=true the answer comes after the import.
    """
    return await take_upload(call, NEW_VERSION)


class VersionOut(Model):
    version: int
    upload_id: int
    file_name: str
    file_size: int
    sha256: str
    status: Annotated[
        str,
        Meta(description="its upload's: uploading, uploaded, importing, imported, failed; deleting"),
    ]
    description: str
    created_at: UtcTime
    is_current: bool
    instances: Annotated[int, Meta(description="nodes where this version is available")]
    clones: Annotated[
        int,
        Meta(
            description="clones made from this version (failed ones, and those whose VM is gone "
            "from PVE, left out)"
        ),
    ]


class VersionList(Model):
    template_id: int
    current_version: int
    list: builtins.list[VersionOut]  # the contract's name; the builtin is reached through its module


@routes.get("/templates/{id}/versions", role="viewer", response=VersionList, errors=(404,))
async def list_versions(call: Call) -> VersionList:
    """A template's versions, newest first, with how many nodes hold each and its clones."""
    template, _ = await load_live_template(call, call.path["id"])
    async with call.app[DB]() as session:
        uploads_ = list(
            await session.scalars(
                select(TemplateUpload)
                .where(TemplateUpload.template_id == template.id, TemplateUpload.status.in_(LISTED))
                .order_by(TemplateUpload.version.desc())
            )
        )
        instances = dict(
            (
                await session.execute(
                    select(TemplateInstance.version, func.count())
                    .where(
                        TemplateInstance.template_id == template.id,
                        TemplateInstance.status == InstanceStatus.AVAILABLE,
                    )
                    .group_by(TemplateInstance.version)
                )
            ).all()
        )
        made = list(
            await session.scalars(
                select(Clone).where(Clone.template_id == template.id, Clone.status != CloneStatus.FAILED)
            )
        )
    # As a delete counts them: a clone whose VM was destroyed in PVE is no longer one.
    in_pve = call.app[INVENTORY].used_vmids
    clones = Counter(
        c.version for c in await still_in_pve(made, in_pve, f"template {template.id}'s versions")
    )
    return VersionList(
        template_id=template.id,
        current_version=template.current_version,
        list=[
            VersionOut(
                version=u.version,
                upload_id=u.id,
                file_name=u.file_name,
                file_size=u.file_size,
                sha256=u.sha256,
                status=u.status,
                description=u.description,
                created_at=whole_seconds(u.created_at),
                is_current=u.version == template.current_version,
                instances=int(instances.get(u.version, 0)),
                clones=int(clones.get(u.version, 0)),
            )
            for u in uploads_
        ],
    )


class Activated(Model):
    template_id: int
    current_version: int
    previous_version: int


@routes.post(
    "/templates/{id}/versions/{version}/activate",
    role="operator",
    response=Activated,
    errors=(404, 409),
)
async def activate_version(call: Call) -> Activated:
    """Make a version current (roll back or forward): clones and look-ups use it from now on.
    409 unless that version is imported."""
    template, _ = await load_workable_template(call, call.path["id"])
    version = call.path["version"]
    async with call.app[DB]() as session:
        upload = await version_delete.version_upload(session, template.id, version)
        if upload.status != UploadStatus.IMPORTED:
            raise Conflict(
                ErrorSlug.VERSION_NOT_IMPORTED,
                f"version {version} of template {template.id} is {upload.status}, not imported; "
                "only an imported version can be current",
            )
        if not await template_states.activate(session, template.id, version, call.actor):
            raise Conflict(ErrorSlug.TEMPLATE_DELETING, f"template {template.id} is being deleted")
        await session.commit()
    log.info("template %s: version %s activated by %s", template.id, version, call.actor)
    call.app[VERSIONS].wake()
    return Activated(
        template_id=template.id, current_version=version, previous_version=template.current_version
    )


class RemovedPart(Model):
    node_name: str
    what: str
    vmid: int | None


class VersionDeleted(Model):
    template_id: int
    version: int
    deleted: Annotated[bool, Meta(description="false (202) while parts are left; it finishes on its own")]
    removed_vms: list[RemovedVm]
    removed_images: int
    reason: str | None = None
    remaining: list[RemovedPart] = []


@routes.delete(
    "/templates/{id}/versions/{version}",
    role="operator",
    response=VersionDeleted,
    accepted=VersionDeleted,
    errors=(404, 409),
)
async def delete_version(call: Call) -> VersionDeleted | Accepted[VersionDeleted]:
    """Remove a version: its VM on every node and its images, through the agents.

    Refused (409) for the current version, while an upload, sync task or clone of it runs,
    and while linked clones use it (the answer names them). When every part answers, it is
    gone before the answer (200); else the answer is 202 with what is left and why, and the
    delete finishes on its own once the part answers again (the version is `deleting`).
    """
    template_id, version = call.path["id"], call.path["version"]
    upload_id = await version_delete.start(call.app[DB], template_id, version, call.app[INVENTORY].used_vmids)
    outcome = await version_delete.attempt(call.app[DB], call.app[DELETE_JOBS], upload_id)
    answer = VersionDeleted(
        template_id=template_id,
        version=version,
        deleted=outcome.done,
        removed_vms=msgspec.convert(outcome.removed_vms, list[RemovedVm]),
        removed_images=outcome.removed_images,
        reason="; ".join(outcome.reasons) or None,
        remaining=msgspec.convert(outcome.remaining, list[RemovedPart]),
    )
    if not outcome.done:
        call.app[VERSIONS].wake()
        return Accepted(answer)
    return answer
