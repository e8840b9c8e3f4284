"""The coordinator's side of the agent link: register, heartbeat, goodbye (/agent-api/v1)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from msgspec import Meta

from coordinator.agents import registry
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, DB, TICKETS
from coordinator.db.models import TemplateSyncTask, TemplateUpload
from shared.validation import Input, Model
from shared.version import VERSION

log = logging.getLogger(__name__)
routes = Routes("agent-link")


class AgentHello(Model):  # not Input: newer agents may report more
    node_name: Annotated[str, Meta(min_length=1, max_length=100)]
    cluster_name: Annotated[str, Meta(max_length=100)]
    url: Annotated[str, Meta(min_length=1, max_length=255)]
    version: Annotated[str, Meta(max_length=50)]
    started_at: Annotated[datetime, Meta(tz=True)]
    pve_ok: bool
    staging_free_bytes: Annotated[int, Meta(ge=0)]
    pve_error: str | None = None

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


class TransferSettings(Model):
    """How agents check tickets and how many streams a node may run at once."""

    ticket_public_key: str
    max_inbound: int
    max_outbound: int


class Registered(Model):
    agent_id: int
    node_id: int | None
    heartbeat_interval: float
    coordinator_version: str
    transfers: TransferSettings


def _registered(call: Call, agent_id: int, node_id: int | None) -> Registered:
    config = call.app[CONFIG]
    return Registered(
        agent_id=agent_id,
        node_id=node_id,
        heartbeat_interval=config.heartbeat_interval,
        coordinator_version=VERSION,
        transfers=TransferSettings(
            ticket_public_key=call.app[TICKETS].public_key,
            max_inbound=config.max_inbound_per_node,
            max_outbound=config.max_outbound_per_node,
        ),
    )


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
    return _registered(call, agent.id, agent.node_id)


@routes.post("/agents/{id}/heartbeat", role="agent", body=AgentHello, response=Registered)
async def heartbeat(call: Call) -> Registered:
    """Keeps the agent live; 404 tells the agent to register again."""
    hello: AgentHello = call.body
    async with call.app[DB]() as session:
        agent = await registry.heartbeat(session, call.path["id"], hello.report())
    if agent is None:
        raise ApiError(404, "agent_not_found", f"agent {call.path['id']} is not registered")
    return _registered(call, agent.id, agent.node_id)


@routes.post("/agents/{id}/goodbye", role="agent")
async def goodbye(call: Call) -> dict[str, object]:
    """A cleanly stopping agent is not live from this moment."""
    async with call.app[DB]() as session:
        await registry.goodbye(session, call.path["id"])
    log.info("agent %s said goodbye", call.path["id"])
    return {"agent_id": call.path["id"]}


class TicketRequest(Input):
    task_id: Annotated[int, Meta(ge=1)]
    epoch: Annotated[int, Meta(ge=1)]  # the attempt the sender's transfer belongs to


class TicketOut(Model):
    task_id: int
    epoch: int
    ticket: str


@routes.post("/tickets", role="agent", body=TicketRequest, response=TicketOut, errors=(404, 409))
async def ticket(call: Call) -> TicketOut:
    """A fresh ticket for a running transfer (a sender resuming or routing around a hop)."""
    body: TicketRequest = call.body
    async with call.app[DB]() as session:
        task = await session.get(TemplateSyncTask, body.task_id)
        if task is None:
            raise ApiError(404, "sync_task_not_found", f"sync task {body.task_id} not found")
        if task.status != "syncing":
            raise ApiError(409, "not_syncing", f"sync task {task.id} is {task.status}, not syncing")
        if task.epoch != body.epoch:
            # A transfer of an attempt that failed: it must stop, not compete with the new one.
            raise ApiError(
                409,
                "stale_transfer",
                f"sync task {task.id} has moved on to a newer attempt; this transfer's is over",
            )
        upload = await session.get(TemplateUpload, task.upload_id)
        assert upload is not None
    token = call.app[TICKETS].issue(
        task_id=task.id,
        epoch=task.epoch,
        node=task.target_node_name,
        size=upload.file_size,
        sha256=upload.sha256,
        fmt=upload.file_format,
    )
    return TicketOut(task_id=task.id, epoch=task.epoch, ticket=token)
