"""A clone request checked against the database and PVE before anything is made: the facts
the planner (coordinator/clone_plan.py) decides from, a VMID the user named, and the
node -> VMID look-up (resolve). Raises the coordinator's refusals (400/404/409/503)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.clone_plan import (
    CloneAsk,
    ClonePlan,
    NodeRef,
    StorageFacts,
    TemplateFacts,
    plan_clone,
    volume_format,
)
from coordinator.db.models import PveNode, PveStorage, TemplateInstance, TemplateUpload, VmTemplate
from coordinator.errors import Conflict, Invalid, NotFound, Unavailable, not_found
from coordinator.inventory.pve_client import PveError
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.states.instance import InstanceStatus
from coordinator.states.upload import UploadStatus
from coordinator.vmids import held_by_us
from shared.error_slugs import ErrorSlug


@dataclass
class CloneFacts:
    node: PveNode
    upload: TemplateUpload
    # The template's storage as the clone's node sees it (where a sync task puts the copy).
    node_storage: PveStorage | None
    plan: ClonePlan


def storage_facts(row: PveStorage) -> StorageFacts:
    content = frozenset(part for part in row.content.split(",") if part)
    return StorageFacts(row.storage_name, row.type, row.shared, content, row.enabled, row.active)


async def clone_facts(
    db: async_sessionmaker[AsyncSession],
    template: VmTemplate,
    node_id: int,
    full: bool | None,
    target_storage: str | None,
    version: int,
) -> CloneFacts:
    """What a clone of ``version`` of the template on ``node_id`` would be."""
    async with db() as session:
        node = await session.get(PveNode, node_id)
        if node is None or node.status == "removed":
            raise not_found(ErrorSlug.NODE_NOT_FOUND, node_id)
        if node.cluster_id != template.cluster_id:
            raise Invalid(
                ErrorSlug.NODE_NOT_IN_CLUSTER,
                f"node {node_id} ({node.node_name}) is not in the cluster of template {template.id}",
                {"fields": {"node_id": "not in the template's cluster"}},
            )
        upload = await _imported_upload(session, template, version)
        home = await _home_instance(session, template, upload)
        storages = {
            s.storage_name: s
            for s in await session.scalars(select(PveStorage).where(PveStorage.node_id == node.id))
        }
        template_storage = await session.get(PveStorage, upload.storage_id)
        mine = await available_instance(session, template.id, node.id, version)
    assert template_storage is not None
    facts = TemplateFacts(
        storage=storage_facts(template_storage),
        volume_format=volume_format(home.volume_id),
        home=NodeRef(home.node_id, home.node_name),
    )
    ask = CloneAsk(
        node=NodeRef(node.id, node.node_name),
        full=full,
        target_storage=target_storage,
        instance_vmid=mine.vmid if mine is not None else None,
        node_storages={name: storage_facts(row) for name, row in storages.items()},
    )
    plan = plan_clone(facts, ask)
    if upload.is_shared:
        plan = ClonePlan(**{**plan.__dict__, "source_vmid": home.vmid})
    return CloneFacts(node, upload, storages.get(upload.storage_name), plan)


async def available_instance(
    session: AsyncSession, template_id: int, node_id: int, version: int
) -> TemplateInstance | None:
    """The template's instance of ``version`` on the node if it is available (a template VM
    to clone)."""
    return await session.scalar(
        select(TemplateInstance).where(
            TemplateInstance.template_id == template_id,
            TemplateInstance.version == version,
            TemplateInstance.node_id == node_id,
            TemplateInstance.status == InstanceStatus.AVAILABLE,
        )
    )


async def _imported_upload(session: AsyncSession, template: VmTemplate, version: int) -> TemplateUpload:
    """The upload of ``version``, if it is imported (404 for a version that does not exist)."""
    upload = await session.scalar(
        select(TemplateUpload).where(
            TemplateUpload.template_id == template.id,
            TemplateUpload.version == version,
            TemplateUpload.status != UploadStatus.DELETED,
        )
    )
    if upload is None:
        if version == template.current_version:
            raise Conflict(ErrorSlug.NO_IMAGE, f"template {template.id} has no image; nothing to clone")
        raise NotFound(ErrorSlug.VERSION_NOT_FOUND, f"template {template.id} has no version {version}")
    if upload.status != UploadStatus.IMPORTED:
        raise Conflict(
            ErrorSlug.NO_IMAGE,
            f"version {version} of template {template.id} is not imported (its upload is {upload.status}); "
            "nothing to clone",
        )
    return upload


async def _home_instance(
    session: AsyncSession, template: VmTemplate, upload: TemplateUpload
) -> TemplateInstance:
    """The instance the import made (its node holds a shared-storage template's one VM)."""
    home = await available_instance(session, template.id, upload.import_node_id, upload.version)
    if home is None or home.vmid is None:
        raise Conflict(
            ErrorSlug.NO_IMAGE,
            f"template {template.id} has no available VM on its import node {upload.import_node_name}",
        )
    return home


async def refuse_vmid_in_pve(inventory: InventoryRefresher, cluster_id: int, vmid: int) -> None:
    """409 when PVE holds ``vmid`` anywhere in the cluster (VMs and containers)."""
    try:
        used = await inventory.used_vmids(cluster_id)
    except PveError as exc:
        raise Unavailable(
            ErrorSlug.PVE_UNREACHABLE, f"cannot check VMID {vmid} with PVE: {exc.message}"
        ) from None
    if vmid in used:
        raise Conflict(
            ErrorSlug.VMID_TAKEN, f"VMID {vmid} is already used in the cluster", {"fields": {"vmid": "taken"}}
        )


async def refuse_held_vmid(session: AsyncSession, cluster_id: int, vmid: int) -> None:
    """409 when a template or another clone of ours holds ``vmid`` (the clone's unique key
    refuses a clone in flight racing this request too)."""
    if vmid in await held_by_us(session, cluster_id):
        raise Conflict(
            ErrorSlug.VMID_TAKEN,
            f"VMID {vmid} is held by a template or clone of this coordinator",
            {"fields": {"vmid": "taken"}},
        )


@dataclass(frozen=True)
class OnNode:
    node_id: int
    node_name: str
    vmid: int
    storage_name: str
    status: str


async def template_on_node(
    session: AsyncSession, template: VmTemplate, node_name: str, version: int
) -> OnNode:
    """Where to clone ``version`` of ``template`` from for ``node_name``: the node's own
    available copy, or (shared storage) the one VM on the node that imported it. NotFound
    otherwise."""
    node = await session.scalar(
        select(PveNode).where(PveNode.cluster_id == template.cluster_id, PveNode.node_name == node_name)
    )
    if node is None or node.status == "removed":
        raise NotFound(ErrorSlug.NODE_NOT_FOUND, f"node {node_name!r} not found in the template's cluster")
    instance = await available_instance(session, template.id, node.id, version)
    if instance is None or instance.vmid is None:
        raise NotFound(
            ErrorSlug.NOT_ON_NODE,
            f"template {template.template_name!r} has no available copy of version {version} on {node_name}; "
            f"clone it there (POST /templates/{template.id}/clone) to have one synced first",
        )
    if instance.is_shared and not instance.is_primary:
        home = await session.scalar(
            select(TemplateInstance).where(
                TemplateInstance.template_id == template.id,
                TemplateInstance.version == version,
                TemplateInstance.is_primary.is_(True),
            )
        )
        if home is not None and home.vmid is not None:
            instance = home
    return OnNode(
        instance.node_id, instance.node_name, instance.vmid or 0, instance.storage_name, instance.status
    )
