"""Names a user types turned into the ids the API takes: a cluster, a storage, nodes.

Every option that takes an id also takes the name the user sees in `pvesphere nodes`
or `pvesphere storages`; a local storage is on every node under one name, so it is
named with its node: ``local@pve-node1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client.exit_codes import UsageError

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api

PAGE = 100


class LookupFailed(UsageError):
    """A name matches nothing, or more than one thing; the message lists what there is."""


async def every(api: Api, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a paginated list."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        data = await api.get(path, page=page, page_size=PAGE, **params)
        rows += data["list"]
        if not data["list"] or len(rows) >= data["total"]:
            return rows
        page += 1


def _id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() else None


async def cluster_id(api: Api, value: str) -> int:
    if (found := _id(value)) is not None:
        return found
    clusters = await every(api, "/clusters")
    for c in clusters:
        if c["cluster_name"] == value:
            return int(c["id"])
    known = ", ".join(f"{c['cluster_name']} ({c['id']})" for c in clusters) or "none"
    raise LookupFailed(f"no cluster named {value!r}; clusters: {known}")


async def storage_id(api: Api, cluster: int, value: str) -> int:
    """An id, ``name`` (a shared storage, or a local one on one node only) or ``name@node``."""
    if (found := _id(value)) is not None:
        return found
    name, _, node = value.partition("@")
    rows = [s for s in await every(api, "/storages", cluster_id=cluster) if s["storage_name"] == name]
    if node:
        rows = [s for s in rows if s["node_name"] == node]
    if not rows:
        raise LookupFailed(f"no storage {value!r} in cluster {cluster} (see `pvesphere storages`)")
    if len(rows) > 1 and not all(s["shared"] for s in rows):
        choices = ", ".join(f"{name}@{s['node_name']}" for s in rows)
        raise LookupFailed(f"storage {name!r} is local to several nodes: say which, one of {choices}")
    return int(rows[0]["id"])


async def storage_name(api: Api, value: str) -> str:
    """A storage as PVE names it (what a clone's target_storage is): ``local-lvm`` as given,
    or the name of the storage with that id (a PVE storage name never starts with a digit)."""
    if (found := _id(value)) is None:
        return value
    return str((await api.get(f"/storages/{found}"))["storage_name"])


async def node_ids(api: Api, cluster: int | None, values: list[str]) -> list[int]:
    names = [v for v in values if _id(v) is None]
    by_name: dict[str, int] = {}
    if names:
        params = {"cluster_id": cluster} if cluster is not None else {}
        by_name = {n["node_name"]: int(n["id"]) for n in await every(api, "/nodes", **params)}
    ids = []
    for value in values:
        found = _id(value)
        if found is None:
            if value not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                raise LookupFailed(f"no node named {value!r}; nodes: {known}")
            found = by_name[value]
        ids.append(found)
    return ids


def split(value: str) -> list[str]:
    """'2,3' or 'pve-node2, pve-node3' -> the items."""
    return [part.strip() for part in value.split(",") if part.strip()]
