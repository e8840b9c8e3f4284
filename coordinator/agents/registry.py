"""Agent registration, heartbeats and liveness.

An agent is live while it heartbeats: silent for longer than ``agent_timeout``
(or after a clean goodbye) it is not, and gets no work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Agent, PveCluster, PveNode
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


def is_live(agent: Agent, now: datetime, timeout: timedelta) -> bool:
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
    """Create or take over the row of (cluster, node): a restarted agent keeps its id."""
    agent = await session.scalar(
        select(Agent).where(Agent.cluster_name == report.cluster_name, Agent.node_name == report.node_name)
    )
    if agent is None:
        agent = Agent(cluster_name=report.cluster_name, node_name=report.node_name)
        session.add(agent)
    _apply(agent, report)
    agent.node_id = await _node_for(session, report.cluster_name, report.node_name)
    await session.commit()
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


async def live_agent_urls(session: AsyncSession, timeout: timedelta) -> dict[int, str]:
    """Node id -> URL of that node's agent, for every node whose agent is live."""
    now = utcnow()
    return {
        a.node_id: a.url
        for a in await session.scalars(select(Agent).where(Agent.node_id.is_not(None)))
        if a.node_id is not None and is_live(a, now, timeout)
    }


async def live_agent(session: AsyncSession, node_id: int, timeout: timedelta) -> Agent | None:
    """The node's agent if it is live, else None."""
    agent = await session.scalar(select(Agent).where(Agent.node_id == node_id))
    if agent is not None and is_live(agent, utcnow(), timeout):
        return agent
    return None
