"""The coordinator's side of the agent link (/agent-api/v1): enrolment, register, heartbeat,
goodbye, tickets, staged copies an agent evicts.

Every call but enrolment carries the calling node's own credential, and a node acts only
as itself: it registers and heartbeats only as its node, says goodbye only for its own
agent, and gets tickets only for transfers it sends.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import manifest_digests
from coordinator.agents import enrolment, registry
from coordinator.api.auth import AgentCaller, bearer
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import AGENTS, CONFIG, CREDENTIALS, DB, TICKETS
from coordinator.db.models import Agent, PveNode, TemplateSyncTask, TemplateUpload
from coordinator.db.races import create_or_return
from coordinator.staging_release import release_copy
from coordinator.sync_tasks import ticket_for
from shared.error_slugs import ErrorSlug
from shared.messages.link import (
    AgentHello,
    Enrolled,
    EnrolRequest,
    Goodbye,
    Identity,
    Registered,
    ReleaseOut,
    ReleaseRequest,
    TicketOut,
    TicketRequest,
    TransferSettings,
)
from shared.version import VERSION, incompatible

log = logging.getLogger(__name__)
routes = Routes("agent-link")


def _report(hello: AgentHello) -> registry.AgentReport:
    return registry.AgentReport(
        node_name=hello.node_name,
        cluster_name=hello.cluster_name,
        url=hello.url.rstrip("/"),
        version=hello.version,
        started_at=hello.started_at,
        pve_ok=hello.pve_ok,
        pve_error=hello.pve_error,
        staging_free_bytes=hello.staging_free_bytes,
    )


def _compatible(hello: AgentHello) -> None:
    """An agent too far from this coordinator's version is refused (shared/version.py)."""
    reason = incompatible(hello.version, VERSION)
    if reason is not None:
        raise ApiError(409, ErrorSlug.INCOMPATIBLE_VERSION, f"node {hello.node_name}: {reason}")


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
            data_plane=config.data_plane,
        ),
    )


@routes.post("/enroll", role=None, body=EnrolRequest, response=Enrolled, errors=(401, 403))
async def enroll(call: Call) -> Enrolled:
    """An agent trades its node's single-use join token (the bearer) for the node's credential."""
    body: EnrolRequest = call.body
    join_token = bearer(call.request)
    async with call.app[DB]() as session:
        generation = await enrolment.enroll(session, body.node_name, join_token)
    log.info("node %s enrolled its agent (credential generation %d)", body.node_name, generation)
    credential = call.app[CREDENTIALS].for_node(body.node_name, generation)
    return Enrolled(node_name=body.node_name, generation=generation, credential=credential)


@routes.get("/whoami", role="agent", response=Identity)
async def whoami(call: Call) -> Identity:
    """The node a credential belongs to, if the coordinator accepts it (pvesphere-agent check)."""
    caller = _caller(call)
    return Identity(node_name=caller.node_name, generation=caller.generation)


def _caller(call: Call) -> AgentCaller:
    assert call.agent is not None  # role="agent" endpoints are authenticated
    return call.agent


def _as_itself(call: Call, node_name: str) -> None:
    caller = _caller(call)
    if node_name != caller.node_name:
        raise ApiError(
            403,
            ErrorSlug.WRONG_NODE,
            f"the credential of node {caller.node_name} cannot act as node {node_name}",
        )


async def _own_agent(session: AsyncSession, call: Call) -> Agent | None:
    """The agent row of the path's id, if any; 403 if it is another node's."""
    agent = await session.get(Agent, call.path["id"])
    if agent is not None and agent.node_name != _caller(call).node_name:
        raise ApiError(
            403,
            ErrorSlug.WRONG_NODE,
            f"agent {agent.id} is node {agent.node_name}'s; "
            f"the credential of node {_caller(call).node_name} cannot act for it",
        )
    return agent


@routes.post("/register", role="agent", body=AgentHello, response=Registered, errors=(403, 409))
async def register(call: Call) -> Registered:
    """An agent announces itself (at start and whenever the coordinator forgot it)."""
    hello: AgentHello = call.body
    _as_itself(call, hello.node_name)
    _compatible(hello)
    agent = await create_or_return(
        call.app[DB],
        lambda session: registry.register(session, _report(hello)),
        f"registration of {hello.node_name}",
    )
    log.info(
        "agent %s/%s registered from %s (version %s, node %s)",
        hello.cluster_name,
        hello.node_name,
        hello.url,
        hello.version,
        agent.node_id if agent.node_id else "not in inventory yet",
    )
    return _registered(call, agent.id, agent.node_id)


@routes.post(
    "/agents/{id}/heartbeat", role="agent", body=AgentHello, response=Registered, errors=(403, 404, 409)
)
async def heartbeat(call: Call) -> Registered:
    """Keeps the agent live; 404 tells the agent to register again."""
    hello: AgentHello = call.body
    _as_itself(call, hello.node_name)
    _compatible(hello)
    async with call.app[DB]() as session:
        await _own_agent(session, call)
        agent = await registry.heartbeat(session, call.path["id"], _report(hello))
    if agent is None:
        raise ApiError(404, ErrorSlug.AGENT_NOT_FOUND, f"agent {call.path['id']} is not registered")
    return _registered(call, agent.id, agent.node_id)


@routes.post("/agents/{id}/goodbye", role="agent", response=Goodbye, errors=(403,))
async def goodbye(call: Call) -> Goodbye:
    """A cleanly stopping agent is not live from this moment."""
    async with call.app[DB]() as session:
        await _own_agent(session, call)
        await registry.goodbye(session, call.path["id"])
    log.info("agent %s said goodbye", call.path["id"])
    return Goodbye(agent_id=call.path["id"])


async def _now_sent_by(session: AsyncSession, task: TemplateSyncTask, node_name: str) -> None:
    """The task's copy comes from ``node_name`` now (a sender routed around the planned relay):
    source_node says so."""
    node_id = await session.scalar(
        select(PveNode.id).where(PveNode.cluster_id == task.cluster_id, PveNode.node_name == node_name)
    )
    if node_id is None:
        return
    log.info(
        "sync task %s to %s: copied from %s now, not %s",
        task.id,
        task.target_node_name,
        node_name,
        task.source_node_name,
    )
    task.source_node_id, task.source_node_name = node_id, node_name
    await session.commit()


@routes.post("/tickets", role="agent", body=TicketRequest, response=TicketOut, errors=(403, 404, 409))
async def ticket(call: Call) -> TicketOut:
    """A fresh ticket for a running transfer (a sender resuming or routing around a hop);
    only for the nodes that send in the task's attempt: its source and the relays before it."""
    body: TicketRequest = call.body
    caller = _caller(call)
    async with call.app[DB]() as session:
        task = await session.get(TemplateSyncTask, body.task_id)
        if task is None or task.uid != body.task_uid:
            raise ApiError(404, ErrorSlug.SYNC_TASK_NOT_FOUND, f"sync task {body.task_id} not found")
        if caller.node_name not in task.upstream_nodes.split(","):
            raise ApiError(
                403,
                ErrorSlug.NOT_A_SENDER,
                f"node {caller.node_name} does not send sync task {task.id} "
                f"(to {task.target_node_name}, from {task.source_node_name})",
            )
        if task.status != "syncing":
            raise ApiError(409, ErrorSlug.NOT_SYNCING, f"sync task {task.id} is {task.status}, not syncing")
        if task.epoch != body.epoch:
            # A transfer of an attempt that failed: it must stop, not compete with the new one.
            raise ApiError(
                409,
                ErrorSlug.STALE_TRANSFER,
                f"sync task {task.id} has moved on to a newer attempt; this transfer's is over",
            )
        if caller.node_name != task.source_node_name:
            await _now_sent_by(session, task, caller.node_name)
        upload = await session.get(TemplateUpload, task.upload_id)
        assert upload is not None
        try:
            manifest = await manifest_digests.for_upload(session, call.app[AGENTS], upload)
        except manifest_digests.NoManifest as exc:
            raise ApiError(
                409, ErrorSlug.NOT_SYNCING, f"no ticket for sync task {task.id} now: {exc}"
            ) from None
    token = ticket_for(call.app[TICKETS], task, manifest)
    return TicketOut(task_id=task.id, epoch=task.epoch, ticket=token)


@routes.post("/staging/release", role="agent", body=ReleaseRequest, response=ReleaseOut)
async def release_staged(call: Call) -> ReleaseOut:
    """An agent over its staging budget asks to evict one of its staged copies. Yes only if
    no pending or running work needs it (coordinator/staging_release.py); from then on the
    copy is not counted as one this node holds, and no sync is planned from it."""
    body: ReleaseRequest = call.body
    caller = _caller(call)
    async with call.app[DB]() as session:
        released, reason = await release_copy(
            session, caller.node_name, body.staged_name, call.app[CONFIG].agent_timeout
        )
    if released:
        log.info("node %s may evict its staged copy %s: %s", caller.node_name, body.staged_name, reason)
    return ReleaseOut(staged_name=body.staged_name, released=released, reason=reason)
