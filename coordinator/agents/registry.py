"""Agent registration, heartbeats and liveness.

An agent is live while it heartbeats: silent for longer than ``agent_timeout``
(or after a clean goodbye, or once its node's credential is revoked) it is not, and
gets no work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Agent, AgentIdentity, PveCluster, PveNode
from coordinator.db.types import utcnow


@dataclass(frozen=True)
class AgentReport:
    """What an agent says about itself on register and on every heartbeat."""

    node_name: str
    cluster_name: str
    url: str
    version: str
    started_at: datetime
    pve_ok: bool
    pve_error: str | None
    staging_free_bytes: int


class Heartbeats(Protocol):
    """An agent's times, as its row or a read of them (coordinator/api/inventory_reads.py)."""

    @property
    def stopped_at(self) -> datetime | None: ...

    @property
    def last_heartbeat_at(self) -> datetime | None: ...


def is_live(agent: Heartbeats, now: datetime, timeout: timedelta) -> bool:
    return (
        agent.stopped_at is None
        and agent.last_heartbeat_at is not None
        and now - agent.last_heartbeat_at <= timeout
    )


async def _node_for(session: AsyncSession, cluster_name: str, node_name: str) -> int | None:
    return await session.scalar(
        select(PveNode.id)
        .join(PveCluster, PveCluster.id == PveNode.cluster_id)
        .where(PveCluster.cluster_name == cluster_name, PveNode.node_name == node_name)
    )


def _apply(agent: Agent, report: AgentReport) -> None:
    now = utcnow()
    agent.url = report.url
    agent.version = report.version
    agent.started_at = report.started_at
    agent.pve_ok = report.pve_ok
    agent.pve_error = report.pve_error
    agent.staging_free_bytes = report.staging_free_bytes
    agent.last_heartbeat_at = now
    agent.stopped_at = None


async def register(session: AsyncSession, report: AgentReport) -> Agent:
    """Create or take over the row of (cluster, node): a restarted agent keeps its id. The
    caller commits (through db.races.create_or_return: two registrations may race)."""
    agent = await session.scalar(
        select(Agent).where(Agent.cluster_name == report.cluster_name, Agent.node_name == report.node_name)
    )
    if agent is None:
        agent = Agent(cluster_name=report.cluster_name, node_name=report.node_name)
        session.add(agent)
    _apply(agent, report)
    agent.node_id = await _node_for(session, report.cluster_name, report.node_name)
    await session.flush()
    return agent


async def heartbeat(session: AsyncSession, agent_id: int, report: AgentReport) -> Agent | None:
    agent = await session.get(Agent, agent_id)
    if agent is None or (agent.node_name, agent.cluster_name) != (
        report.node_name,
        report.cluster_name,
    ):
        return None
    _apply(agent, report)
    if agent.node_id is None:
        agent.node_id = await _node_for(session, report.cluster_name, report.node_name)
    await session.commit()
    return agent


async def goodbye(session: AsyncSession, agent_id: int) -> None:
    agent = await session.get(Agent, agent_id)
    if agent is not None:
        agent.stopped_at = utcnow()
        await session.commit()


@dataclass(frozen=True)
class AgentAddress:
    """How to give orders to a node's live agent: where it is and which credential it takes."""

    node_id: int
    node_name: str
    url: str
    generation: int


async def _live(session: AsyncSession, timeout: timedelta, *where: ColumnElement[bool]) -> list[AgentAddress]:
    # Only enrolled, unrevoked nodes: a revoked node gets no work even if a heartbeat of its
    # slipped in just before the revocation.
    rows = await session.execute(
        select(Agent, AgentIdentity.generation)
        .join(AgentIdentity, AgentIdentity.node_name == Agent.node_name)
        .where(Agent.node_id.is_not(None), AgentIdentity.revoked_at.is_(None), *where)
    )
    now = utcnow()
    return [
        AgentAddress(agent.node_id, agent.node_name, agent.url, generation)
        for agent, generation in rows.all()
        if agent.node_id is not None and is_live(agent, now, timeout)
    ]


async def live_agents(session: AsyncSession, timeout: timedelta) -> dict[int, AgentAddress]:
    """Node id -> that node's agent, for every node whose agent is live."""
    return {a.node_id: a for a in await _live(session, timeout)}


async def live_agent(session: AsyncSession, node_id: int, timeout: timedelta) -> AgentAddress | None:
    """The node's agent if it is live, else None."""
    found = await _live(session, timeout, Agent.node_id == node_id)
    return found[0] if found else None
