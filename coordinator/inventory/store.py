"""Writing a cluster snapshot into pve_node / pve_storage rows (insert, update, retire)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Agent, PveCluster, PveNode, PveStorage
from coordinator.db.types import utcnow
from coordinator.inventory.pve_client import ClusterSnapshot
from coordinator.states import node as node_states


async def apply_snapshot(session: AsyncSession, cluster: PveCluster, snap: ClusterSnapshot) -> None:
    """Make the cluster's rows match what PVE said. The caller commits."""
    now = utcnow()
    cluster.pve_version = snap.pve_version
    cluster.last_sync_at = now
    cluster.last_sync_error = None
    await _apply_nodes(session, cluster, snap, now)
    await _apply_storages(session, cluster, snap, now)
    await link_agents(session, cluster)


async def _apply_nodes(
    session: AsyncSession, cluster: PveCluster, snap: ClusterSnapshot, now: datetime
) -> None:
    """A pve_node row for every node PVE lists; a node no longer listed is marked removed."""
    existing = {
        n.node_name: n
        for n in (await session.scalars(select(PveNode).where(PveNode.cluster_id == cluster.id)))
    }
    for node_info in snap.nodes:
        node = existing.pop(node_info.name, None)
        if node is None:
            node = PveNode(cluster_id=cluster.id, node_name=node_info.name)
            session.add(node)
        node_states.observe(node, node_info.status)
        node.ip_address = node_info.ip_address
        node.last_sync_at = now
    for gone in existing.values():
        # Keep the row: instances and tasks refer to it by id; PVE no longer lists the node.
        node_states.mark_removed(gone)
    await session.flush()


async def _apply_storages(
    session: AsyncSession, cluster: PveCluster, snap: ClusterSnapshot, now: datetime
) -> None:
    """A pve_storage row for every storage PVE lists, on the node rows ``_apply_nodes`` wrote."""
    nodes = {
        n.node_name: n
        for n in (await session.scalars(select(PveNode).where(PveNode.cluster_id == cluster.id)))
    }
    online = {n.name for n in snap.nodes if n.status == node_states.ONLINE}
    rows = {
        (s.node_id, s.storage_name): s
        for s in await session.scalars(select(PveStorage).where(PveStorage.cluster_id == cluster.id))
    }
    seen: set[tuple[int, str]] = set()
    for info in snap.storages:
        node = nodes[info.node]
        key = (node.id, info.storage)
        seen.add(key)
        row = rows.get(key)
        if row is None:
            row = PveStorage(cluster_id=cluster.id, node_id=node.id, storage_name=info.storage)
            session.add(row)
        row.type = info.type
        row.content = info.content
        row.shared = info.shared
        row.active = info.active
        row.enabled = info.enabled
        row.total = info.total
        row.used = info.used
        row.avail = info.avail
        row.last_sync_at = now
    # Storages removed from an online node's config go; an offline node keeps its last known rows.
    stale = [
        row.id for key, row in rows.items() if key not in seen and _node_name(nodes, row.node_id) in online
    ]
    if stale:
        await session.execute(delete(PveStorage).where(PveStorage.id.in_(stale)))


def _node_name(nodes: dict[str, PveNode], node_id: int) -> str:
    return next((name for name, n in nodes.items() if n.id == node_id), "")


async def link_agents(session: AsyncSession, cluster: PveCluster) -> None:
    """Point agents that announced this cluster's name at their node rows."""
    nodes = (await session.scalars(select(PveNode).where(PveNode.cluster_id == cluster.id))).all()
    for node in nodes:
        await session.execute(
            update(Agent)
            .where(Agent.cluster_name == cluster.cluster_name, Agent.node_name == node.node_name)
            .values(node_id=node.id)
        )
