"""How the agent talks to the coordinator: register, heartbeat, goodbye, tickets, always
with this node's own credential (agent/identity.py). The coordinator's URL and the HTTP
sessions to it are made here and nowhere else.

Registration and heartbeats carry the same report (identity, PVE status,
free staging space). A heartbeat answered with 404 means the coordinator
forgot this agent (new database, or this node's identity changed): register again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec

from agent.config import AgentConfig
from agent.pve import NodePve
from agent.transfer.errors import TransferRefused
from agent.transfer.policy import PeerPolicy
from shared.error_slugs import ErrorSlug
from shared.messages import decode, to_builtins
from shared.messages.link import (
    AgentHello,
    Envelope,
    Registered,
    ReleaseOut,
    ReleaseRequest,
    TicketOut,
    TicketRequest,
)
from shared.tls import client_context, untrusted_certificate
from shared.version import VERSION

log = logging.getLogger(__name__)
D = TypeVar("D")


def agent_api(config: AgentConfig) -> str:
    """The base URL of the coordinator's agent API."""
    return config.coordinator_url.rstrip("/") + "/agent-api/v1"


@functools.cache
def coordinator_tls(ca_file: Path | None) -> ssl.SSLContext:
    """How the coordinator's certificate is checked: against ``coordinator_ca_file`` (None:
    the system's trust store) and the host name in ``coordinator_url``."""
    return client_context(ca_file, "coordinator_ca_file")


def coordinator_session(config: AgentConfig, total_timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=coordinator_tls(config.coordinator_ca_file)),
        timeout=aiohttp.ClientTimeout(total=total_timeout),
    )


async def call_coordinator(
    session: aiohttp.ClientSession, method: str, url: str, bearer: str, body: Any = None
) -> tuple[int, Any]:
    """(status, decoded JSON body or None)."""
    headers = {"Authorization": f"Bearer {bearer}"}
    async with session.request(method, url, json=body, headers=headers) as resp:
        try:
            payload = await resp.json(content_type=None)
        except ValueError:
            payload = None
        return resp.status, payload


def link_failure(exc: BaseException) -> str:
    """Why the coordinator could not be reached, said so that an admin knows what to change."""
    untrusted = untrusted_certificate(exc)
    if untrusted is not None:
        return (
            f"its certificate is not trusted ({untrusted}): "
            "coordinator_ca_file must name the CA that issued it"
        )
    return str(exc) or exc.__class__.__name__


def error_message(payload: Any) -> object:
    return payload.get("message") if isinstance(payload, dict) else payload


def answer_data(kind: type[D], payload: Any) -> D:
    """The ``data`` of the coordinator's answer, as ``kind``; RuntimeError naming the field
    when it is not one (a coordinator too far ahead or behind: shared/version.py)."""
    try:
        return decode(Envelope[kind], payload).data  # type: ignore[valid-type]
    except msgspec.ValidationError as exc:
        raise RuntimeError(f"the coordinator's answer is no {kind.__name__}: {exc}") from None


class CoordinatorLink:
    def __init__(self, config: AgentConfig, pve: NodePve, credential: str, policy: PeerPolicy) -> None:
        self.config = config
        self.pve = pve
        self.policy = policy
        self.base = agent_api(config)
        self.credential = credential
        self.started_at = datetime.now(UTC)
        self.agent_id: int | None = None
        self.interval = 5.0
        self._failing_since: float | None = None

    async def report(self) -> AgentHello:
        status = await self.pve.status()
        try:
            free = shutil.disk_usage(self.config.staging_dir).free
        except OSError:
            free = 0
        return AgentHello(
            node_name=self.config.node_name,
            cluster_name=status.cluster_name,
            url=self.config.url,
            version=VERSION,
            started_at=self.started_at,
            pve_ok=status.ok,
            pve_error=status.error,
            staging_free_bytes=free,
        )

    async def _post(self, session: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
        return await call_coordinator(session, "POST", self.base + path, self.credential, to_builtins(body))

    async def beat_once(self, session: aiohttp.ClientSession) -> None:
        body = await self.report()
        if self.agent_id is not None:
            status, payload = await self._post(session, f"/agents/{self.agent_id}/heartbeat", body)
            if status == 404:
                log.info("coordinator no longer knows agent %s; registering again", self.agent_id)
                self.agent_id = None
        if self.agent_id is None:
            status, payload = await self._post(session, "/register", body)
            if status == 200:
                self.agent_id = answer_data(Registered, payload).agent_id
                log.info(
                    "registered with %s as agent %s (node %s, cluster %s)",
                    self.config.coordinator_url,
                    self.agent_id,
                    body.node_name,
                    body.cluster_name or "unknown: PVE does not answer",
                )
        if status == 401:
            raise RuntimeError(
                f"the coordinator refuses this node's credential ({error_message(payload)}); "
                "if it was revoked, enrol again with a new join token"
            )
        if status != 200:
            raise RuntimeError(f"coordinator answered {status}: {error_message(payload)}")
        registered = answer_data(Registered, payload)
        self.interval = registered.heartbeat_interval
        self.policy.update(registered.transfers)

    async def run(self) -> None:
        """Heartbeat until cancelled; failures are logged once per outage, not every beat."""
        async with coordinator_session(self.config, 10) as session:
            while True:
                try:
                    await self.beat_once(session)
                    if self._failing_since is not None:
                        log.info("coordinator %s reachable again", self.config.coordinator_url)
                        self._failing_since = None
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    if self._failing_since is None:
                        self._failing_since = asyncio.get_running_loop().time()
                        log.warning(
                            "no heartbeat to coordinator %s: %s (will keep trying)",
                            self.config.coordinator_url,
                            link_failure(exc),
                        )
                await asyncio.sleep(self.interval if self._failing_since is None else 2.0)

    async def fresh_ticket(self, task_id: int, task_uid: str, epoch: int) -> str:
        """A new ticket to (re)open a stream to the target of ``task_id`` in its attempt ``epoch``
        (refused once the task has moved on to another attempt)."""
        try:
            async with coordinator_session(self.config, 10) as session:
                status, payload = await self._post(
                    session, "/tickets", TicketRequest(task_id, task_uid, epoch)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransferRefused(
                503, ErrorSlug.COORDINATOR_UNREACHABLE, f"no ticket for task {task_id}: {exc}"
            ) from None
        if status != 200:
            message = error_message(payload)
            raise TransferRefused(status, ErrorSlug.NO_TICKET, f"no ticket for task {task_id}: {message}")
        return answer_data(TicketOut, payload).ticket

    async def release_staged(self, name: str) -> tuple[bool, str]:
        """Ask to evict the staged copy ``name``: (True, why it may go) once the coordinator no
        longer counts it as a copy this node holds, or (False, why it is still needed).
        Without an answer nothing is evicted: only the coordinator knows the pending work."""
        try:
            async with coordinator_session(self.config, 10) as session:
                status, payload = await self._post(session, "/staging/release", ReleaseRequest(name))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"the coordinator did not answer: {link_failure(exc)}"
        if status != 200:
            return False, f"the coordinator answered {status}: {error_message(payload)}"
        try:
            released = answer_data(ReleaseOut, payload)
        except RuntimeError as exc:
            return False, str(exc)
        return released.released, released.reason

    async def goodbye(self) -> None:
        if self.agent_id is None:
            return
        try:
            async with coordinator_session(self.config, 3) as session:
                await self._post(session, f"/agents/{self.agent_id}/goodbye", {})
        except (aiohttp.ClientError, TimeoutError):
            pass  # the coordinator will notice the silence instead
