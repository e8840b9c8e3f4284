"""Checking an upload request against the inventory before a single byte is streamed.

Everything that can be known up front is checked here (contract 3.1
"Validation before any work"), so a bad request costs nothing and leaves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.agents.registry import is_live
from coordinator.db.models import (
    Agent,
    PveCluster,
    PveNode,
    PveStorage,
    TemplateInstance,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.types import utcnow
from coordinator.errors import Conflict, Invalid, NotFound, Unavailable, not_found
from coordinator.states.instance import InstanceStatus
from coordinator.states.template import TemplateStatus
from coordinator.version_plan import Held, rollout_nodes
from shared.error_slugs import ErrorSlug

# PVE storage types that cannot hold a template's base volume (no 'template' feature).
NO_TEMPLATES = {"lvm": "LVM (thick) storage cannot hold templates; use LVM-thin, ZFS, a directory or Ceph"}


@dataclass
class Target:
    node: PveNode
    storage: PveStorage


@dataclass
class UploadPlan:
    cluster: PveCluster
    storage: PveStorage
    import_node: PveNode
    # Nodes that get an instance from the import itself (all of them for shared storage).
    instance_targets: list[Target]
    # Nodes that get a copy by sync (local storage only).
    sync_targets: list[Target] = field(default_factory=list)


async def _live_nodes(session: AsyncSession, node_ids: list[int], timeout: timedelta) -> set[int]:
    agents = await session.scalars(select(Agent).where(Agent.node_id.in_(node_ids)))
    now = utcnow()
    return {a.node_id for a in agents if a.node_id is not None and is_live(a, now, timeout)}


async def same_named_storages(session: AsyncSession, cluster_id: int, name: str) -> list[Target]:
    rows = (
        await session.execute(
            select(PveStorage, PveNode)
            .join(PveNode, PveNode.id == PveStorage.node_id)
            .where(
                PveStorage.cluster_id == cluster_id,
                PveStorage.storage_name == name,
                PveNode.status != "removed",
            )
            .order_by(PveNode.node_name)
        )
    ).all()
    return [Target(node, storage) for storage, node in rows]


def refuse_sync_on_shared(storage: PveStorage, *, sync_node_ids: bool, auto_sync: bool = False) -> None:
    """A shared storage has nothing to sync (every node sees it): asking for a sync on one,
    by nodes or by ``auto_sync`` (local storage only), is a 400 naming what was asked."""
    asked = [name for name, given in (("sync_node_ids", sync_node_ids), ("auto_sync", auto_sync)) if given]
    if asked:
        raise Invalid(
            ErrorSlug.SHARED_STORAGE_NO_SYNC,
            f"storage {storage.storage_name!r} is shared: every node sees it, "
            f"{' and '.join(asked)} do not apply",
        )


async def sync_targets(
    session: AsyncSession,
    cluster: PveCluster,
    storage: PveStorage,
    source_node: PveNode,
    node_ids: list[int],
    auto_sync: bool,
) -> list[Target]:
    """The nodes a local-storage template is to be copied to; 400/404 naming a bad one."""
    candidates = {t.node.id: t for t in await same_named_storages(session, cluster.id, storage.storage_name)}
    if not node_ids:
        if not auto_sync:
            return []
        return [t for nid, t in candidates.items() if nid != source_node.id and t.node.status == "online"]
    targets: list[Target] = []
    for node_id in dict.fromkeys(node_ids):
        node = await session.get(PveNode, node_id)
        if node is None:
            raise NotFound(ErrorSlug.NODE_NOT_FOUND, f"sync node {node_id} not found")
        if node.cluster_id != cluster.id:
            raise Invalid(
                ErrorSlug.NODE_NOT_IN_CLUSTER,
                f"sync node {node_id} ({node.node_name}) is not in cluster {cluster.cluster_name}",
            )
        if node.id == source_node.id:
            raise Invalid(
                ErrorSlug.SYNC_NODE_IS_SOURCE,
                f"sync node {node_id} ({node.node_name}) is the node the template is imported on",
            )
        if node.id not in candidates:
            raise Invalid(
                ErrorSlug.STORAGE_MISSING_ON_NODE,
                f"sync node {node_id} ({node.node_name}) has no storage named {storage.storage_name!r}",
            )
        targets.append(candidates[node.id])
    return targets


async def plan_upload(
    session: AsyncSession,
    *,
    template_name: str,
    cluster_id: int,
    storage_id: int,
    sync_node_ids: list[int],
    auto_sync: bool,
    agent_timeout: timedelta,
) -> UploadPlan:
    cluster, storage = await _template_storage(session, cluster_id, storage_id)
    await _refuse_taken_name(session, cluster, template_name)
    if storage.shared:
        refuse_sync_on_shared(storage, sync_node_ids=bool(sync_node_ids), auto_sync=auto_sync)
        return await _shared_plan(session, cluster, storage, agent_timeout)
    node = await _local_import_node(session, storage, agent_timeout)
    targets = await sync_targets(session, cluster, storage, node, sync_node_ids, auto_sync)
    return UploadPlan(cluster, storage, node, [Target(node, storage)], targets)


async def _local_import_node(session: AsyncSession, storage: PveStorage, agent_timeout: timedelta) -> PveNode:
    """The node that owns a local storage, if its agent is live (503 otherwise)."""
    node = await session.get(PveNode, storage.node_id)
    assert node is not None
    if node.id not in await _live_nodes(session, [node.id], agent_timeout):
        raise Unavailable(
            ErrorSlug.NO_LIVE_AGENT,
            f"no live agent on node {node.node_name}, which holds storage {storage.id}",
        )
    return node


async def plan_version(
    session: AsyncSession, template: VmTemplate, *, rollout: bool, agent_timeout: timedelta
) -> UploadPlan:
    """The plan of a template's next version (contract 6.1): imported on the import node of
    the template's storage (the node that owns a local one; a node with a live agent that sees
    a shared one, where every node gets its instance from the import). With ``rollout``, every
    other node holding an available instance of an earlier version gets a sync task."""
    cluster, storage = await _template_storage(
        session, template.cluster_id, await _storage_of(session, template)
    )
    if storage.shared:
        return await _shared_plan(session, cluster, storage, agent_timeout)
    node = await _local_import_node(session, storage, agent_timeout)
    plan = UploadPlan(cluster, storage, node, [Target(node, storage)])
    if rollout:
        plan.sync_targets = await rollout_targets(session, template, storage, node)
    return plan


async def plan_of_upload(
    session: AsyncSession, upload: TemplateUpload, *, sync_node_ids: list[int], auto_sync: bool, rollout: bool
) -> UploadPlan:
    """The plan of an upload reserved earlier (a resumable one, whose last byte came in a
    later request than its checks): its import node stays the one holding the image; its
    instances and sync targets are taken as plan_upload/plan_version take them, now."""
    cluster = await session.get(PveCluster, upload.cluster_id)
    storage = await session.get(PveStorage, upload.storage_id)
    node = await session.get(PveNode, upload.import_node_id)
    template = await session.get(VmTemplate, upload.template_id) if upload.template_id else None
    if cluster is None or storage is None or node is None or template is None:
        raise Conflict(
            ErrorSlug.UPLOAD_ABANDONED, f"upload {upload.id}: its cluster, storage or node is gone"
        )
    if storage.shared:
        return UploadPlan(
            cluster, storage, node, await same_named_storages(session, cluster.id, storage.storage_name)
        )
    plan = UploadPlan(cluster, storage, node, [Target(node, storage)])
    if upload.version == 1:
        plan.sync_targets = await sync_targets(session, cluster, storage, node, sync_node_ids, auto_sync)
    elif rollout:
        plan.sync_targets = await rollout_targets(session, template, storage, node)
    return plan


async def _storage_of(session: AsyncSession, template: VmTemplate) -> int:
    """The pve_storage id the template's versions are on: its first upload's (every version
    of a template is on the storage the template was made on)."""
    storage_id = await session.scalar(
        select(TemplateUpload.storage_id)
        .where(TemplateUpload.template_id == template.id)
        .order_by(TemplateUpload.version)
        .limit(1)
    )
    if storage_id is None:
        raise Conflict(ErrorSlug.NO_IMAGE, f"template {template.id} has no upload to make a version of")
    return storage_id


async def rollout_targets(
    session: AsyncSession, template: VmTemplate, storage: PveStorage, import_node: PveNode
) -> list[Target]:
    """The nodes a new version is rolled out to (version_plan.rollout_nodes), with their
    same-named storage; a node that lost it (or left the cluster) is left out."""
    newest = await session.scalar(
        select(func.max(TemplateUpload.version)).where(TemplateUpload.template_id == template.id)
    )
    held = [
        Held(node_id, version, status == InstanceStatus.AVAILABLE)
        for node_id, version, status in (
            await session.execute(
                select(TemplateInstance.node_id, TemplateInstance.version, TemplateInstance.status).where(
                    TemplateInstance.template_id == template.id
                )
            )
        ).all()
    ]
    wanted = rollout_nodes(held, int(newest or 0) + 1, import_node.id)
    by_node = {
        t.node.id: t for t in await same_named_storages(session, template.cluster_id, storage.storage_name)
    }
    return [by_node[n] for n in wanted if n in by_node]


async def plan_from_vm(
    session: AsyncSession,
    *,
    template_name: str,
    cluster_id: int,
    node_id: int,
    storage_id: int | None,
    sync_node_ids: list[int],
    agent_timeout: timedelta,
    version_of: VmTemplate | None = None,
    rollout: bool = True,
) -> UploadPlan:
    """An upload's plan for a template made from a VM's disk on ``node_id``: the disk is
    exported into that node's staging, so that node is the import node, and the storage must
    be one it sees (its own local storage, or a shared one). ``version_of``: the disk is a new
    version of that template, on its storage (``storage_id``, if given, must be that one),
    rolled out as an uploaded version is (``rollout``) instead of to ``sync_node_ids``."""
    cluster = await session.get(PveCluster, cluster_id)
    if cluster is None:
        raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, cluster_id)
    node = await session.get(PveNode, node_id)
    if node is None or node.status == "removed":
        raise not_found(ErrorSlug.NODE_NOT_FOUND, node_id)
    if node.cluster_id != cluster.id:
        raise Invalid(
            ErrorSlug.NODE_NOT_IN_CLUSTER, f"node {node_id} ({node.node_name}) is not in cluster {cluster_id}"
        )
    if version_of is not None:
        storage_id = await _version_storage(session, version_of, storage_id)
    assert storage_id is not None  # (the body asks for it without template_id)
    cluster, storage = await _template_storage(session, cluster_id, storage_id)
    if version_of is None:
        await _refuse_taken_name(session, cluster, template_name)
    if node.id not in await _live_nodes(session, [node.id], agent_timeout):
        message = f"no live agent on node {node.node_name}, which holds the VM"
        raise Unavailable(ErrorSlug.NO_LIVE_AGENT, message)
    if storage.shared:
        refuse_sync_on_shared(storage, sync_node_ids=bool(sync_node_ids))
        targets = await same_named_storages(session, cluster.id, storage.storage_name)
        if node.id not in {t.node.id for t in targets}:
            raise Invalid(
                ErrorSlug.STORAGE_MISSING_ON_NODE,
                f"node {node.node_name} does not see storage {storage.storage_name!r}",
            )
        return UploadPlan(cluster, storage, node, targets)
    if storage.node_id != node.id:
        raise Invalid(
            ErrorSlug.STORAGE_MISSING_ON_NODE,
            f"storage {storage_id} ({storage.storage_name!r}) is local to another node than the VM's "
            f"({node.node_name}): choose a storage of {node.node_name} or a shared one, then sync",
        )
    if version_of is None:
        targets = await sync_targets(session, cluster, storage, node, sync_node_ids, False)
    else:
        targets = await rollout_targets(session, version_of, storage, node) if rollout else []
    return UploadPlan(cluster, storage, node, [Target(node, storage)], targets)


async def _version_storage(session: AsyncSession, template: VmTemplate, storage_id: int | None) -> int:
    """The storage of a new version: the template's (a different one named is a 400)."""
    own = await _storage_of(session, template)
    if storage_id is not None and storage_id != own:
        raise Invalid(
            ErrorSlug.INVALID_REQUEST,
            f"storage {storage_id} is not the storage of template {template.id} (storage {own}); "
            "every version of a template is on its storage: leave storage_id out",
            {"fields": {"storage_id": "not the template's storage"}},
        )
    return own


async def _template_storage(
    session: AsyncSession, cluster_id: int, storage_id: int
) -> tuple[PveCluster, PveStorage]:
    """The cluster and the storage named, if that storage can hold a template there."""
    cluster = await session.get(PveCluster, cluster_id)
    if cluster is None:
        raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, cluster_id)
    storage = await session.get(PveStorage, storage_id)
    if storage is None:
        raise not_found(ErrorSlug.STORAGE_NOT_FOUND, storage_id)
    if storage.cluster_id != cluster.id:
        raise Invalid(
            ErrorSlug.STORAGE_NOT_IN_CLUSTER, f"storage {storage_id} does not belong to cluster {cluster_id}"
        )
    if "images" not in storage.content.split(","):
        raise Invalid(
            ErrorSlug.STORAGE_NO_IMAGES,
            f"storage {storage.storage_name!r} does not accept VM images "
            f"(content: {storage.content or 'none'})",
        )
    if storage.type in NO_TEMPLATES:
        raise Invalid(ErrorSlug.STORAGE_CANNOT_HOLD_TEMPLATES, NO_TEMPLATES[storage.type])
    if not storage.enabled:
        raise Invalid(ErrorSlug.STORAGE_DISABLED, f"storage {storage.storage_name!r} is disabled in PVE")
    return cluster, storage


async def _refuse_taken_name(session: AsyncSession, cluster: PveCluster, template_name: str) -> None:
    taken = (
        await session.execute(
            select(VmTemplate.id, VmTemplate.status).where(
                VmTemplate.cluster_id == cluster.id, VmTemplate.name_key == template_name
            )
        )
    ).first()
    if taken is not None:
        deleting = ", which is being deleted" if taken.status == TemplateStatus.DELETING else ""
        raise Conflict(
            ErrorSlug.TEMPLATE_NAME_TAKEN,
            f"template name {template_name!r} is already used in cluster {cluster.cluster_name!r} "
            f"(template {taken.id}{deleting})",
        )


async def _shared_plan(
    session: AsyncSession, cluster: PveCluster, storage: PveStorage, agent_timeout: timedelta
) -> UploadPlan:
    """One import, by a node that sees the storage and has a live agent; every node holds it."""
    targets = [t for t in await same_named_storages(session, cluster.id, storage.storage_name)]
    live = await _live_nodes(session, [t.node.id for t in targets], agent_timeout)
    # Prefer the node of the storage row the user picked, then any node with a live agent.
    ordered = sorted(targets, key=lambda t: (t.node.id != storage.node_id, t.node.node_name))
    importer = next((t.node for t in ordered if t.node.id in live), None)
    if importer is None:
        names = ", ".join(t.node.node_name for t in targets)
        raise Unavailable(
            ErrorSlug.NO_LIVE_AGENT,
            f"no live agent on any node that sees {storage.storage_name!r} ({names})",
        )
    return UploadPlan(cluster, storage, importer, targets)
