"""Clones (contract 6.2): clone a template on a node, follow the clones, and the node -> VMID
look-up for Terraform, Ansible and Packer users.

POST /templates/{id}/clone            {"node_id", "name", "vmid", "full", "version",
                                       "target_storage", "vm_config"}
GET  /clones                          page, page_size, template_id, node_id, status
GET  /clones/{id}
GET  /templates/resolve               cluster_id, name, node[, version]
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

from aiohttp import web
from msgspec import Meta
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import version_delete
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.api.templates import TemplateName, load_workable_template
from coordinator.api.timefmt import UtcTime, whole_seconds
from coordinator.appkeys import CLONES, DB, INVENTORY, SYNCS
from coordinator.clone_request import (
    CloneFacts,
    clone_facts,
    refuse_held_vmid,
    refuse_vmid_in_pve,
    template_on_node,
)
from coordinator.db.models import Clone, PveCluster, PveNode, VmTemplate
from coordinator.db.races import create_or_return
from coordinator.errors import Conflict, Invalid, NotFound
from coordinator.states import clone as clone_states
from coordinator.states.clone import CloneStatusName
from coordinator.states.template import TemplateStatus
from coordinator.sync_tasks import create_sync_tasks
from coordinator.upload_plan import Target
from shared.error_slugs import ErrorSlug
from shared.messages.link import NODE_NAME
from shared.text_fields import StorageId, VmName
from shared.validation import Input, Model
from shared.vm_config import SUMMARY as VM_CONFIG_SUMMARY
from shared.vm_config import VmConfig, check_volumes

log = logging.getLogger(__name__)
routes = Routes("clones")

Vmid = Annotated[int, Meta(ge=100, le=999_999_999, description="PVE's VMID range")]


class CloneBody(Input):
    node_id: Annotated[int, Meta(ge=1, description="the node the clone is made on")]
    name: VmName
    vmid: Vmid | None = None  # null: the clone range's (or PVE's) next free one
    full: Annotated[
        bool | None,
        Meta(description="null: linked where the storage can (dir/NFS, LVM-thin, ZFS, RBD), else full"),
    ] = None
    version: Annotated[int, Meta(ge=1, description="null: the template's current version")] | None = None
    target_storage: Annotated[StorageId | None, Meta(description="full clones only: where the copy goes")] = (
        None
    )
    vm_config: Annotated[VmConfig, Meta(description=VM_CONFIG_SUMMARY)] = VmConfig()


class NodeRef(Model):
    node_id: int
    node_name: str


class CloneOut(Model):
    clone_id: int
    template_id: int
    version: int
    node: NodeRef
    vmid: int | None
    name: str
    linked: bool
    status: CloneStatusName
    progress: int
    sync_task_id: int | None
    error_message: str | None
    created_at: UtcTime
    finished_at: UtcTime | None


class CloneQuery(PageQuery):
    template_id: Annotated[int, Meta(ge=1)] | None = None
    node_id: Annotated[int, Meta(ge=1)] | None = None
    status: CloneStatusName | None = None


class ResolveQuery(Input):
    cluster_id: Annotated[int, Meta(ge=1)]
    name: TemplateName
    node: Annotated[str, Meta(pattern=f"^{NODE_NAME}$", max_length=100, description="the node's name")]
    version: Annotated[int, Meta(ge=1, description="default: the template's current version")] | None = None


class Resolved(Model):
    template_id: int
    version: int
    node_id: Annotated[
        int, Meta(description="where to clone from: the node itself, or the VM's node (shared storage)")
    ]
    node_name: str
    vmid: int
    storage_name: str
    status: str


def clone_out(row: Clone) -> CloneOut:
    return CloneOut(
        clone_id=row.id,
        template_id=row.template_id,
        version=row.version,
        node=NodeRef(node_id=row.node_id, node_name=row.node_name),
        vmid=row.vmid,
        name=row.name,
        linked=row.linked,
        status=row.status,  # type: ignore[arg-type]
        progress=row.progress,
        sync_task_id=row.sync_task_id,
        error_message=row.error_message,
        created_at=whole_seconds(row.created_at),
        finished_at=whole_seconds(row.finished_at) if row.finished_at else None,
    )


@routes.post(
    "/templates/{id}/clone", role="operator", body=CloneBody, response=CloneOut, errors=(400, 404, 409, 503)
)
async def clone_template(call: Call) -> CloneOut:
    """Make a VM from the template on a node: linked where the storage can, else full.

    A node without an available copy of a local-storage template gets a sync task first,
    and the clone follows it (`waiting_for_sync`, then `cloning`). A shared-storage
    template is cloned by its VM's node onto the node asked for.
    """
    template, _ = await load_workable_template(call, call.path["id"])
    body: CloneBody = call.body
    version = template.current_version if body.version is None else body.version
    facts = await clone_facts(call.app[DB], template, body.node_id, body.full, body.target_storage, version)
    try:  # new volumes (EFI vars, TPM state, a cloud-init drive) go where the clone's disks go
        check_volumes(body.vm_config, facts.plan.target_storage or facts.upload.storage_name)
    except ValueError as exc:
        raise Invalid(ErrorSlug.INVALID_REQUEST, str(exc), {"fields": {"vm_config": str(exc)}}) from None
    if body.vmid is not None:
        await refuse_vmid_in_pve(call.app[INVENTORY], template.cluster_id, body.vmid)

    async def create(session: AsyncSession) -> Clone:
        return await _create(session, call, template, body, facts)

    row = await create_or_return(call.app[DB], create, f"clone of template {template.id}")
    call.app[CLONES].wake()
    if row.sync_task_id is not None:
        call.app[SYNCS].wake()
    log.info(
        "clone %s of template %s on %s: %s by %s", row.id, template.id, row.node_name, row.status, call.actor
    )
    return clone_out(row)


async def _create(
    session: AsyncSession, call: Call, template: VmTemplate, body: CloneBody, facts: CloneFacts
) -> Clone:
    plan = facts.plan
    sync_task_id = None
    if plan.needs_sync:
        source = await session.get(PveNode, facts.upload.import_node_id)
        assert source is not None and facts.node_storage is not None
        planned = await create_sync_tasks(
            session, facts.upload, source, [Target(facts.node, facts.node_storage)], call.actor
        )
        task = planned[0].task
        if task is None:  # the node has it after all (a sync completed since the plan)
            raise Conflict(ErrorSlug.SYNC_TASK_ACTIVE, f"{planned[0].skipped_reason}; ask again")
        sync_task_id = task.id
    if body.vmid is not None:
        await refuse_held_vmid(session, template.cluster_id, body.vmid)
    row = clone_states.new_clone(
        waits_for_sync=plan.needs_sync,
        template_id=template.id,
        version=facts.upload.version,
        upload_id=facts.upload.id,
        cluster_id=template.cluster_id,
        node_id=facts.node.id,
        node_name=facts.node.node_name,
        source_node_id=plan.source.id,
        source_node_name=plan.source.name,
        source_vmid=plan.source_vmid,
        storage_name=facts.upload.storage_name,
        vmid=body.vmid,
        vmid_given=body.vmid is not None,
        name=str(body.name),
        linked=plan.linked,
        requested_full=body.full,
        target_storage=plan.target_storage,
        vm_config=json.dumps(dict(body.vm_config)),
        image_size=max(facts.upload.file_size, facts.upload.virtual_size),
        sync_task_id=sync_task_id,
        progress=0,
        attempts=0,
        unexpected_errors=0,
        creator=call.actor,
    )
    session.add(row)
    await session.flush()
    return row


@routes.get("/clones", role="viewer", query=CloneQuery, response=Page[CloneOut])
async def list_clones(call: Call) -> web.Response:
    """Clones, newest first; filter by template, node and status."""
    q: CloneQuery = call.query
    where = []
    if q.template_id is not None:
        where.append(Clone.template_id == q.template_id)
    if q.node_id is not None:
        where.append(Clone.node_id == q.node_id)
    if q.status is not None:
        where.append(Clone.status == q.status)
    async with call.app[DB]() as session:
        total = await session.scalar(select(func.count()).select_from(Clone).where(*where))
        rows = await session.scalars(
            select(Clone)
            .where(*where)
            .order_by(Clone.id.desc())
            .offset((q.page - 1) * q.page_size)
            .limit(q.page_size)
        )
        items = [clone_out(r) for r in rows]
    return ok(Page(total=int(total or 0), page=q.page, page_size=q.page_size, list=items))


@routes.get("/clones/{id}", role="viewer", response=CloneOut, errors=(404,))
async def get_clone(call: Call) -> web.Response:
    """One clone: its status, progress (full clones report it), VMID and error."""
    async with call.app[DB]() as session:
        row = await session.get(Clone, call.path["id"])
    if row is None:
        raise not_found(ErrorSlug.CLONE_NOT_FOUND, call.path["id"])
    return ok(clone_out(row))


@routes.get("/templates/resolve", role="viewer", query=ResolveQuery, response=Resolved, errors=(404,))
async def resolve(call: Call) -> Resolved:
    """The VMID to clone a template from on a node (for Terraform, Ansible, Packer).

    A local-storage template answers that node's own copy. A shared-storage template is one
    VM, on the node that imported it, for every node: PVE clones it only there, so the
    answer names that node (clone with `target` = your node: bpg's `clone.node_name`).
    404 when the node has no available copy.
    """
    q: ResolveQuery = call.query
    async with call.app[DB]() as session:
        cluster = await session.get(PveCluster, q.cluster_id)
        if cluster is None:
            raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, q.cluster_id)
        template = await session.scalar(
            select(VmTemplate).where(
                VmTemplate.cluster_id == cluster.id,
                VmTemplate.name_key == str(q.name),
                VmTemplate.status == TemplateStatus.ACTIVE,
            )
        )
        if template is None:
            raise NotFound(
                ErrorSlug.TEMPLATE_NOT_FOUND,
                f"no template named {str(q.name)!r} in cluster {cluster.cluster_name}",
            )
        version = template.current_version
        if q.version is not None:  # a version named must exist (404 version_not_found)
            version = (await version_delete.version_upload(session, template.id, q.version)).version
        found = await template_on_node(session, template, q.node, version)
    return Resolved(
        template_id=template.id,
        version=version,
        node_id=found.node_id,
        node_name=found.node_name,
        vmid=found.vmid,
        storage_name=found.storage_name,
        status=found.status,
    )
