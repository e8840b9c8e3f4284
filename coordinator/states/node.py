"""A node's status (pve_node.status): what PVE last said of it (online, offline, unknown),
or ``removed`` once it left the cluster. Observed, not a machine: any status may follow any."""

from __future__ import annotations

from coordinator.db.models import PveNode

REMOVED = "removed"
ONLINE = "online"


def observe(node: PveNode, status: str) -> None:
    """What PVE says of the node now (the inventory refresh)."""
    node.status = status


def mark_removed(node: PveNode) -> None:
    node.status = REMOVED
