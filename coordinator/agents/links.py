"""Reaching the agent of a node: only live agents get work (503 otherwise), and each is
called with its own node's credential."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient
from coordinator.agents.credentials import Credentials
from coordinator.agents.registry import AgentAddress, live_agent
from coordinator.db.models import PveNode
from coordinator.errors import CoordinatorError


class NoLiveAgent(CoordinatorError):
    def __init__(self, node_name: str) -> None:
        super().__init__(f"no live agent on node {node_name}")
        self.node_name = node_name


class AgentLinks:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        http: aiohttp.ClientSession,
        credentials: Credentials,
        timeout: float,
    ) -> None:
        self.db = db
        self.http = http
        self.credentials = credentials
        self.timeout = timedelta(seconds=timeout)

    def client(self, agent: AgentAddress) -> AgentClient:
        return AgentClient(self.http, agent.url, self.credentials.for_node(agent.node_name, agent.generation))

    async def for_node(self, node_id: int) -> AgentClient:
        async with self.db() as session:
            agent = await live_agent(session, node_id, self.timeout)
            if agent is None:
                node = await session.get(PveNode, node_id)
                raise NoLiveAgent(node.node_name if node else f"#{node_id}")
        return self.client(agent)
