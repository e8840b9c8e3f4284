"""Templates: list, get, update, delete (soft, or cascade as a durable job)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta
from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.api import template_reads
from coordinator.api.errors import ApiError, conflict, not_found
from coordinator.api.fast_json import ok
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Accepted, Call, Routes
from coordinator.api.template_reads import DeletionOut, InstanceOut, TemplateOut, UploadInfo, deletion_out
from coordinator.appkeys import DB, DELETE_JOBS, DELETES, INVENTORY, READS
from coordinator.db.models import (
    PveCluster,
    TemplateDeletion,
    VmTemplate,
)
from coordinator.db.types import utcnow
from coordinator.jobs.engine import LeaseLost
from coordinator.states.deletion import UNFINISHED
from coordinator.states.template import TemplateStatus, TemplateStatusName
from coordinator.template_delete import deleting_conflict, soft_delete, start_cascade
from shared.error_slugs import ErrorSlug
from shared.text_fields import Description, refuse_control
from shared.validation import CheckedStr, Input, Model

routes = Routes("templates")

NAME_MAX = 128


def clean_template_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise ValueError("template_name must not be empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"template_name must be at most {NAME_MAX} characters (got {len(name)})")
    return refuse_control("template_name", name)


class TemplateName(CheckedStr):
    """A template name: trimmed, 1..128 characters, no control characters."""

    field = "template_name"
    json_schema = {"type": "string", "minLength": 1, "maxLength": NAME_MAX}

    @classmethod
    def check(cls, text: str) -> str:
        return clean_template_name(text)


class TemplateQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only templates of this cluster")] | None = None
    name: Annotated[str, Meta(max_length=NAME_MAX, description="name contains this text")] | None = None


class TemplateUpdate(Input):
    template_name: TemplateName | None = None
    description: Description | None = None


class DeleteQuery(Input):
    cascade: Annotated[bool, Meta(description="also remove every instance's VM from Proxmox")] = False


class RemovedVm(Model):
    node_name: str
    vmid: int
    existed: bool


class Deleted(Model):
    id: int
    deleted: bool
    cascade: bool
    removed_vms: list[RemovedVm] = []
    removed_images: int = 0


def deletion_of_row(d: TemplateDeletion | None) -> DeletionOut | None:
    if d is None:
        return None
    return deletion_out(d.status, d.started_at, d.reason, d.remaining, d.attempts, d.next_attempt_at)


def template_out(t: VmTemplate, cluster_name: str, deletion: TemplateDeletion | None = None) -> TemplateOut:
    return TemplateOut(
        id=t.id,
        template_name=t.template_name,
        cluster_id=t.cluster_id,
        cluster_name=cluster_name,
        description=t.description,
        status=msgspec.convert(t.status, TemplateStatusName),
        deletion=deletion_of_row(deletion),
        created_at=t.created_at,
        updated_at=t.updated_at,
        creator=t.creator,
        modifier=t.modifier,
        current_version=t.current_version,
    )


def _live():  # type: ignore[no-untyped-def]
    """Visible templates (active or deleting), their cluster's name and unfinished deletion."""
    return (
        select(VmTemplate, PveCluster.cluster_name, TemplateDeletion)
        .join(PveCluster, PveCluster.id == VmTemplate.cluster_id)
        .outerjoin(
            TemplateDeletion,
            and_(TemplateDeletion.template_id == VmTemplate.id, TemplateDeletion.status.in_(UNFINISHED)),
        )
        .where(VmTemplate.status != TemplateStatus.DELETED)
    )


async def _load_live(
    session: AsyncSession, template_id: int
) -> tuple[VmTemplate, str, TemplateDeletion | None]:
    row = (await session.execute(_live().where(VmTemplate.id == template_id))).first()
    if row is None:
        raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, template_id)
    return row[0], row[1], row[2]


async def load_live_template(call: Call, template_id: int) -> tuple[VmTemplate, str]:
    async with call.app[DB]() as session:
        template, cluster_name, _ = await _load_live(session, template_id)
    return template, cluster_name


async def load_workable_template(call: Call, template_id: int) -> tuple[VmTemplate, str]:
    """A visible template that new work may start on: 409 while it is being deleted."""
    template, cluster_name = await load_live_template(call, template_id)
    refuse_deleting(template)
    return template, cluster_name


def refuse_deleting(template: VmTemplate) -> None:
    if template.status == TemplateStatus.DELETING:
        raise deleting_conflict(template.id)


@routes.get("/templates", role="viewer", query=TemplateQuery, response=Page[TemplateOut])
async def list_templates(call: Call) -> web.Response:
    """Live templates, newest first; deleted ones are hidden."""
    q: TemplateQuery = call.query
    total, rows = await template_reads.page(call.app[READS], q.cluster_id, q.name, q.page, q.page_size)
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=rows))


@routes.get("/templates/{id}", role="viewer", response=TemplateOut, errors=(404,))
async def get_template(call: Call) -> web.Response:
    """One template."""
    template = await template_reads.one(call.app[READS], call.path["id"])
    if template is None:
        raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, call.path["id"])
    return ok(template)


@routes.put("/templates/{id}", role="operator", body=TemplateUpdate, response=TemplateOut, errors=(404, 409))
async def update_template(call: Call) -> TemplateOut:
    """Rename a template or change its description."""
    body: TemplateUpdate = call.body
    if body.template_name is None and body.description is None:
        raise ApiError(400, ErrorSlug.INVALID_REQUEST, "give template_name and/or description to change")
    async with call.app[DB]() as session:
        template, cluster_name, _ = await _load_live(session, call.path["id"])
        refuse_deleting(template)
        if body.template_name is not None:
            template.template_name = body.template_name
            template.name_key = body.template_name
        if body.description is not None:
            template.description = body.description
        template.modifier = call.actor
        template.updated_at = utcnow()
        try:
            await session.commit()
        except IntegrityError:
            raise conflict(
                f"template name {body.template_name!r} is already used in cluster {cluster_name!r}",
                ErrorSlug.TEMPLATE_NAME_TAKEN,
            ) from None
    return template_out(template, cluster_name)


@routes.delete(
    "/templates/{id}",
    role="operator",
    query=DeleteQuery,
    response=Deleted,
    accepted=TemplateOut,
    errors=(404, 409),
)
async def delete_template(call: Call) -> Deleted | Accepted[TemplateOut]:
    """Delete a template: soft by default (hidden, nothing removed from Proxmox).

    With cascade=true every instance's VM is removed from Proxmox through its agent,
    with the staged images, instances and sync tasks; an import of it that runs is
    stopped (its upload fails). When every part answers, that is done within the
    request (200). When one does not (its agent is down, PVE does not answer or
    fails), the answer is 202 with the template in the `deleting` state, which says
    what is still to remove and why; the delete then finishes on its own once the
    part answers again (also across coordinator restarts). Asking again while it is
    deleting answers the same 202. Refused (409) while its file is still being
    uploaded or a sync of it copies, while a clone of it is made, and while linked
    clones use its disks (the answer names them, as PVE itself refuses). A cascade also
    finishes what a soft delete left.
    """
    q: DeleteQuery = call.query
    template_id = call.path["id"]
    if not q.cascade:
        await soft_delete(call.app[DB], template_id, call.actor)
        return Deleted(id=template_id, deleted=True, cascade=False)
    runner = call.app[DELETES]
    started = await start_cascade(
        call.app[DB], template_id, call.actor, runner.lease, call.app[INVENTORY].used_vmids
    )
    if started.claimed:
        try:
            outcome = await runner.hold(
                started.deletion_id, call.app[DELETE_JOBS].attempt(started.deletion_id)
            )
        except LeaseLost:
            outcome = None
        if outcome is not None and outcome.done:
            return Deleted(
                id=template_id,
                deleted=True,
                cascade=True,
                removed_vms=msgspec.convert(outcome.removed_vms, list[RemovedVm]),
                removed_images=outcome.removed_images,
            )
    else:
        runner.wake()
    async with call.app[DB]() as session:
        try:
            template, cluster_name, deletion = await _load_live(session, template_id)
        except ApiError:  # the runner finished it in the meantime
            return Deleted(id=template_id, deleted=True, cascade=True)
    return Accepted(template_out(template, cluster_name, deletion))


class DetailQuery(Input):
    include_instances: Annotated[bool, Meta(description="also list the template's instances")] = False


class TemplateDetail(Model, omit_defaults=True):
    id: int
    template_name: str
    cluster_id: int
    cluster_name: str
    description: str
    status: TemplateStatusName
    deletion: DeletionOut | None
    current_version: Annotated[int, Meta(description="the version clones and look-ups use by default")]
    upload_info: Annotated[UploadInfo | None, Meta(description="the current version's upload")]
    instances: list[InstanceOut] | None = None


class InstanceList(Model):
    template_id: int
    template_name: str
    total: int
    instances: list[InstanceOut]


@routes.get(
    "/templates/{id}/detail", role="viewer", query=DetailQuery, response=TemplateDetail, errors=(404,)
)
async def template_detail(call: Call) -> web.Response:
    """A template with its current version's upload and, on request, its instances (every
    version's, newest version first, primary first)."""
    q: DetailQuery = call.query
    found = await template_reads.detail(call.app[READS], call.path["id"], q.include_instances)
    if found is None:
        raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, call.path["id"])
    t, upload, instances = found
    return ok(
        TemplateDetail(
            id=t.id,
            template_name=t.template_name,
            cluster_id=t.cluster_id,
            cluster_name=t.cluster_name,
            description=t.description,
            status=t.status,
            deletion=t.deletion,
            current_version=t.current_version,
            upload_info=upload,
            instances=instances,
        )
    )


class InstancesQuery(Input):
    version: (
        Annotated[int, Meta(ge=1, description="only this version's (default: every version's)")] | None
    ) = None


@routes.get(
    "/templates/{id}/instances", role="viewer", query=InstancesQuery, response=InstanceList, errors=(404,)
)
async def template_instances(call: Call) -> web.Response:
    """Where the template is: one instance per node and version, newest version first,
    primary first."""
    q: InstancesQuery = call.query
    found = await template_reads.with_instances(call.app[READS], call.path["id"], q.version)
    if found is None:
        raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, call.path["id"])
    template, instances = found
    if instances is None:  # a version the template does not have, as resolve answers it
        raise not_found(ErrorSlug.VERSION_NOT_FOUND, f"{q.version} of template {template.id}")
    return ok(
        InstanceList(
            template_id=template.id,
            template_name=template.template_name,
            total=len(instances),
            instances=instances,
        )
    )
