"""The coordinator's side of the agent link: register, heartbeat, goodbye (/agent-api/v1)."""

from __future__ import annotations

import logging

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from coordinator.agents import registry
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, DB
from shared.version import VERSION

log = logging.getLogger(__name__)
routes = Routes("agent-link")


class AgentHello(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer agents may report more

    node_name: str = Field(min_length=1, max_length=100)
    cluster_name: str = Field(max_length=100)
    url: str = Field(min_length=1, max_length=255)
    version: str = Field(max_length=50)
    started_at: AwareDatetime
    pve_ok: bool
    pve_error: str | None = None
    staging_free_bytes: int = Field(ge=0)

    def report(self) -> registry.AgentReport:
        return registry.AgentReport(
            node_name=self.node_name,
            cluster_name=self.cluster_name,
            url=self.url.rstrip("/"),
            version=self.version,
            started_at=self.started_at,
            pve_ok=self.pve_ok,
            pve_error=self.pve_error,
            staging_free_bytes=self.staging_free_bytes,
        )


class Registered(BaseModel):
    agent_id: int
    node_id: int | None
    heartbeat_interval: float
    coordinator_version: str


@routes.post("/register", role="agent", body=AgentHello, response=Registered)
async def register(call: Call) -> Registered:
    """An agent announces itself (at start and whenever the coordinator forgot it)."""
    hello: AgentHello = call.body
    async with call.app[DB]() as session:
        agent = await registry.register(session, hello.report())
    log.info(
        "agent %s/%s registered from %s (version %s, node %s)",
        hello.cluster_name,
        hello.node_name,
        hello.url,
        hello.version,
        agent.node_id if agent.node_id else "not in inventory yet",
    )
    return Registered(
        agent_id=agent.id,
        node_id=agent.node_id,
        heartbeat_interval=call.app[CONFIG].heartbeat_interval,
        coordinator_version=VERSION,
    )


@routes.post("/agents/{id}/heartbeat", role="agent", body=AgentHello, response=Registered)
async def heartbeat(call: Call) -> Registered:
    """Keeps the agent live; 404 tells the agent to register again."""
    hello: AgentHello = call.body
    async with call.app[DB]() as session:
        agent = await registry.heartbeat(session, call.path["id"], hello.report())
    if agent is None:
        raise ApiError(404, "agent_not_found", f"agent {call.path['id']} is not registered")
    return Registered(
        agent_id=agent.id,
        node_id=agent.node_id,
        heartbeat_interval=call.app[CONFIG].heartbeat_interval,
        coordinator_version=VERSION,
    )


@routes.post("/agents/{id}/goodbye", role="agent")
async def goodbye(call: Call) -> dict[str, object]:
    """A cleanly stopping agent is not live from this moment."""
    async with call.app[DB]() as session:
        await registry.goodbye(session, call.path["id"])
    log.info("agent %s said goodbye", call.path["id"])
    return {"agent_id": call.path["id"]}
