"""How the agent talks to the coordinator: register, heartbeat, goodbye.

Registration and heartbeats carry the same report (identity, PVE status,
free staging space). A heartbeat answered with 404 means the coordinator
forgot this agent (new database, or this node's identity changed): register again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime
from typing import Any

import aiohttp

from agent.config import AgentConfig
from agent.pve import NodePve
from agent.transfer.errors import TransferRefused
from agent.transfer.policy import PeerPolicy
from shared.version import VERSION

log = logging.getLogger(__name__)


class CoordinatorLink:
    def __init__(self, config: AgentConfig, pve: NodePve, token: str, policy: PeerPolicy) -> None:
        self.config = config
        self.pve = pve
        self.policy = policy
        self.base = config.coordinator_url.rstrip("/") + "/agent-api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.started_at = datetime.now(UTC)
        self.agent_id: int | None = None
        self.interval = 5.0
        self._failing_since: float | None = None

    async def report(self) -> dict[str, Any]:
        status = await self.pve.status()
        try:
            free = shutil.disk_usage(self.config.staging_dir).free
        except OSError:
            free = 0
        return {
            "node_name": self.config.node_name,
            "cluster_name": status.cluster_name,
            "url": self.config.url,
            "version": VERSION,
            "started_at": self.started_at.isoformat(),
            "pve_ok": status.ok,
            "pve_error": status.error,
            "staging_free_bytes": free,
        }

    async def _post(self, session: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
        async with session.post(self.base + path, json=body, headers=self.headers) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = None
            return resp.status, payload

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
                data = payload["data"]
                self.agent_id = data["agent_id"]
                log.info(
                    "registered with %s as agent %s (node %s, cluster %s)",
                    self.config.coordinator_url,
                    self.agent_id,
                    body["node_name"],
                    body["cluster_name"] or "unknown: PVE does not answer",
                )
        if status != 200:
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise RuntimeError(f"coordinator answered {status}: {message}")
        self.interval = float(payload["data"]["heartbeat_interval"])
        self.policy.update(payload["data"].get("transfers") or {})

    async def run(self) -> None:
        """Heartbeat until cancelled; failures are logged once per outage, not every beat."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
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
                            "cannot reach coordinator %s: %s (will keep trying)",
                            self.config.coordinator_url,
                            exc or exc.__class__.__name__,
                        )
                await asyncio.sleep(self.interval if self._failing_since is None else 2.0)

    async def fresh_ticket(self, task_id: int, epoch: int) -> str:
        """A new ticket to (re)open a stream to the target of ``task_id`` in its attempt ``epoch``
        (refused once the task has moved on to another attempt)."""
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                status, payload = await self._post(session, "/tickets", {"task_id": task_id, "epoch": epoch})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransferRefused(
                503, "coordinator_unreachable", f"no ticket for task {task_id}: {exc}"
            ) from None
        if status != 200:
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise TransferRefused(status, "no_ticket", f"no ticket for task {task_id}: {message}")
        return str(payload["data"]["ticket"])

    async def goodbye(self) -> None:
        if self.agent_id is None:
            return
        timeout = aiohttp.ClientTimeout(total=3)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await self._post(session, f"/agents/{self.agent_id}/goodbye", {})
        except (aiohttp.ClientError, TimeoutError):
            pass  # the coordinator will notice the silence instead
