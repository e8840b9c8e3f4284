"""The inventory reads of GET /clusters, /nodes, /storages and /agents (and of one of each),
compiled once (coordinator/db/fast_reads.py).

Through the ORM a page cost 1.6-4.0 ms of CPU a request (issue 12, SQLite: clusters 3.97,
three queries of ids, rows and counts; storages 2.65, nodes 1.98, agents 1.61): a count and
a page, every row built as an ORM object; now 0.12-0.14 ms (wrk -c8, SQLite: 0.02-0.03 x
-> 0.33-0.45 x the bare handler on the same loaded machine). Here a page and its total are one
statement (coordinator/api/page_reads.py), a cluster's node and storage counts are
subqueries of its row (indexed by cluster), and an agent's liveness is decided from its
row's times by coordinator/agents/registry.py's is_live, on its heartbeat to the microsecond
(fast_reads gives whole seconds, as the API shows them: /agents would call an agent silent
up to a second before /readyz does). Every list grows with the inventory, not with the
history. The answers' structs are defined here, beside the columns they are built from
(``fields_of``: one definition of each shape).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import String, bindparam, func, select, type_coerce

from coordinator.agents.registry import is_live
from coordinator.api.page_reads import CountedPage, Scope, read_page
from coordinator.api.timefmt import UtcTime
from coordinator.db.fast_reads import AnySelect, Query, Reads, Row, fields_of
from coordinator.db.models import Agent, PveCluster, PveNode, PveStorage
from shared.validation import Model


class ClusterOut(Model):
    id: int
    cluster_name: str
    api_url: str
    token_id: str
    verify_ssl: bool
    pve_version: str
    node_count: int
    storage_count: int
    last_sync_at: UtcTime | None
    last_sync_error: str | None
    created_at: UtcTime
    updated_at: UtcTime
    creator: str
    modifier: str


class NodeOut(Model):
    id: int
    node_name: str
    cluster_id: int
    cluster_name: str
    ip_address: str
    status: str
    agent_live: bool


class StorageOut(Model):
    id: int
    storage_name: str
    type: str
    shared: bool
    content: str
    active: bool
    enabled: bool
    node_id: int
    node_name: str
    cluster_id: int
    total: int
    used: int
    avail: int


class AgentOut(Model):
    id: int
    node_id: int | None
    node_name: str
    cluster_id: int | None
    cluster_name: str
    url: str
    version: str
    live: bool
    last_heartbeat_at: UtcTime | None
    started_at: UtcTime | None
    pve_ok: bool
    pve_error: str | None
    staging_free_bytes: int


class Heartbeats(NamedTuple):
    """What registry.is_live reads of an agent."""

    stopped_at: datetime | None
    last_heartbeat_at: datetime | None


def _heartbeats(stopped_at: datetime | None, heartbeat: str | None) -> Heartbeats:
    """``heartbeat`` as stored ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC), read as text."""
    return Heartbeats(
        stopped_at, None if heartbeat is None else datetime.fromisoformat(heartbeat).replace(tzinfo=UTC)
    )


class Liveness(NamedTuple):
    """When an agent is live: a heartbeat at most ``timeout`` before ``now``."""

    now: datetime
    timeout: timedelta

    def of(self, stopped_at: datetime | None, heartbeat: str | None) -> bool:
        return is_live(_heartbeats(stopped_at, heartbeat), self.now, self.timeout)


_C, _N, _S, _A = PveCluster, PveNode, PveStorage, Agent
# The heartbeat as stored, to the microsecond: as text, fast_reads leaves it as it comes
# (SQLite keeps it as text; MariaDB's DATETIME arrives as text, see fast_reads.MysqlReads).
_HEARTBEAT = type_coerce(_A.last_heartbeat_at, String())


def _no_scope(stmt: AnySelect) -> AnySelect:
    return stmt


_NODE_COUNT = (
    select(func.count())
    .select_from(_N)
    .where(_N.cluster_id == _C.id, _N.status != "removed")
    .scalar_subquery()
)
_STORAGE_COUNT = select(func.count()).select_from(_S).where(_S.cluster_id == _C.id).scalar_subquery()
_CLUSTER_COLUMNS = fields_of(
    ClusterOut,
    {
        "id": _C.id,
        "cluster_name": _C.cluster_name,
        "api_url": _C.api_url,
        "token_id": _C.token_id,
        "verify_ssl": _C.verify_ssl,
        "pve_version": _C.pve_version,
        "node_count": _NODE_COUNT,
        "storage_count": _STORAGE_COUNT,
        "last_sync_at": _C.last_sync_at,
        "last_sync_error": _C.last_sync_error,
        "created_at": _C.created_at,
        "updated_at": _C.updated_at,
        "creator": _C.creator,
        "modifier": _C.modifier,
    },
)
_CLUSTERS = CountedPage(_C, _CLUSTER_COLUMNS, _no_scope, _C.id)
_CLUSTER = Query(select(*_CLUSTER_COLUMNS).where(_C.id == bindparam("id")))


def _filtered(joins: Scope, *filters: tuple[bool, str, object]) -> Scope:
    """``joins``, then ``column == :name`` for each (on, name, column) that is on."""

    def scope(stmt: AnySelect) -> AnySelect:
        stmt = joins(stmt)
        for on, name, column in filters:
            if on:
                stmt = stmt.where(column == bindparam(name))
        return stmt

    return scope


def _node_joins(stmt: AnySelect) -> AnySelect:
    return stmt.join(_C, _C.id == _N.cluster_id).outerjoin(_A, _A.node_id == _N.id)


_NODE_FIELDS = {
    "id": _N.id,
    "node_name": _N.node_name,
    "cluster_id": _N.cluster_id,
    "cluster_name": _C.cluster_name,
    "ip_address": _N.ip_address,
    "status": _N.status,
    "agent_live": _A.id,  # with the two columns after it (``_node``)
}
_NODE_COLUMNS = (*fields_of(NodeOut, _NODE_FIELDS), _A.stopped_at, _HEARTBEAT)
_NODES = {
    c: CountedPage(_N, _NODE_COLUMNS, _filtered(_node_joins, (c, "cluster_id", _N.cluster_id)), _N.id)
    for c in (False, True)
}
_NODE = Query(_node_joins(select(*_NODE_COLUMNS).select_from(_N)).where(_N.id == bindparam("id")))


def _storage_joins(stmt: AnySelect) -> AnySelect:
    return stmt.join(_N, _N.id == _S.node_id)


_STORAGE_COLUMNS = fields_of(
    StorageOut,
    {
        name: _N.node_name if name == "node_name" else getattr(_S, name)
        for name in StorageOut.__struct_fields__
    },
)
_STORAGES = {
    (c, n, s): CountedPage(
        _S,
        _STORAGE_COLUMNS,
        _filtered(
            _storage_joins,
            (c, "cluster_id", _S.cluster_id),
            (n, "node_id", _S.node_id),
            (s, "shared", _S.shared),
        ),
        _S.id,
    )
    for c in (False, True)
    for n in (False, True)
    for s in (False, True)
}
_STORAGE = Query(_storage_joins(select(*_STORAGE_COLUMNS).select_from(_S)).where(_S.id == bindparam("id")))


def _agent_joins(stmt: AnySelect) -> AnySelect:
    return stmt.outerjoin(_N, _N.id == _A.node_id)


_AGENT_FIELDS = {
    name: _N.cluster_id if name == "cluster_id" else _A.id if name == "live" else getattr(_A, name)
    for name in AgentOut.__struct_fields__
}
# "live" stands for the last two columns (``_agent``)
_AGENT_COLUMNS = (*fields_of(AgentOut, _AGENT_FIELDS), _A.stopped_at, _HEARTBEAT)
_AGENT_SCOPES = {c: _filtered(_agent_joins, (c, "cluster_id", _N.cluster_id)) for c in (False, True)}
_AGENTS = {c: CountedPage(_A, _AGENT_COLUMNS, scope, _A.id) for c, scope in _AGENT_SCOPES.items()}
# Every agent of the filter, for the liveness filter (a function of time, decided per row;
# agents are few: one per node).
_ALL_AGENTS = {
    c: Query(scope(select(*_AGENT_COLUMNS).select_from(_A)).order_by(_A.id.desc()))
    for c, scope in _AGENT_SCOPES.items()
}
_AGENT = Query(_agent_joins(select(*_AGENT_COLUMNS).select_from(_A)).where(_A.id == bindparam("id")))


def _given(**params: object) -> dict[str, object]:
    return {k: v for k, v in params.items() if v is not None}


async def _one(reads: Reads, query: Query, id: int) -> Row | None:
    (found,) = await reads.fetch((query, {"id": id}))
    return found[0] if found else None


def _node(r: Row, live: Liveness) -> NodeOut:
    agent_id, stopped_at, heartbeat = r[6:]
    return NodeOut(*r[:6], agent_id is not None and live.of(stopped_at, heartbeat))  # type: ignore[call-arg]


def _agent(r: Row, live: Liveness) -> AgentOut:
    return AgentOut(*r[:7], live.of(*r[-2:]), *r[8:-2])  # type: ignore[call-arg]


async def clusters(reads: Reads, page: int, page_size: int) -> tuple[int, list[ClusterOut]]:
    total, rows = await read_page(reads, _CLUSTERS, {}, page, page_size)
    return total, [ClusterOut(*r) for r in rows]


async def cluster(reads: Reads, cluster_id: int) -> ClusterOut | None:
    row = await _one(reads, _CLUSTER, cluster_id)
    return ClusterOut(*row) if row is not None else None


async def nodes(
    reads: Reads, cluster_id: int | None, page: int, page_size: int, live: Liveness
) -> tuple[int, list[NodeOut]]:
    total, rows = await read_page(
        reads, _NODES[cluster_id is not None], _given(cluster_id=cluster_id), page, page_size
    )
    return total, [_node(r, live) for r in rows]


async def node(reads: Reads, node_id: int, live: Liveness) -> NodeOut | None:
    row = await _one(reads, _NODE, node_id)
    return _node(row, live) if row is not None else None


async def storages(
    reads: Reads, cluster_id: int | None, node_id: int | None, shared: bool | None, page: int, page_size: int
) -> tuple[int, list[StorageOut]]:
    query = _STORAGES[(cluster_id is not None, node_id is not None, shared is not None)]
    params = _given(cluster_id=cluster_id, node_id=node_id, shared=shared)
    total, rows = await read_page(reads, query, params, page, page_size)
    return total, [StorageOut(*r) for r in rows]


async def storage(reads: Reads, storage_id: int) -> StorageOut | None:
    row = await _one(reads, _STORAGE, storage_id)
    return StorageOut(*row) if row is not None else None


async def agents(
    reads: Reads, cluster_id: int | None, page: int, page_size: int, live: Liveness
) -> tuple[int, list[AgentOut]]:
    total, rows = await read_page(
        reads, _AGENTS[cluster_id is not None], _given(cluster_id=cluster_id), page, page_size
    )
    return total, [_agent(r, live) for r in rows]


async def all_agents(reads: Reads, cluster_id: int | None, live: Liveness) -> list[AgentOut]:
    (rows,) = await reads.fetch((_ALL_AGENTS[cluster_id is not None], _given(cluster_id=cluster_id)))
    return [_agent(r, live) for r in rows]


async def agent(reads: Reads, agent_id: int, live: Liveness) -> AgentOut | None:
    row = await _one(reads, _AGENT, agent_id)
    return _agent(row, live) if row is not None else None
