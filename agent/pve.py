"""This node's PVE, through proxmoxer: `pvesh` as root (local backend) or an API token.

proxmoxer is synchronous; every call here runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from proxmoxer import ProxmoxAPI, ResourceException

from agent.config import AgentConfig
from shared.pve_api import open_https

# Every pvesh call is a process of its own (on PVE a Perl interpreter loading the API, the
# emulator's Python ~0.2 CPU s): the heartbeat's status check, two calls, cost ~8 % of a
# core per node when made every 5 s. A healthy status is checked again once a minute, a
# failing one every 5 s (to see PVE come back soon).
STATUS_TTL_OK = 60.0
STATUS_TTL_FAILING = 5.0


class PveCallError(Exception):
    """A PVE call failed; the message is PVE's own (or why PVE could not be asked)."""


@dataclass(frozen=True)
class PveStatus:
    ok: bool
    version: str
    cluster_name: str
    error: str | None


class NodePve:
    """PVE as seen from the node the agent runs on."""

    def __init__(self, config: AgentConfig) -> None:
        self.node = config.node_name
        if config.pve_backend == "local":
            self._api = ProxmoxAPI(backend="local", timeout=config.pve_timeout)
        else:
            verify: bool | str = (config.pve_ca_file or True) if config.pve_verify_ssl else False
            self._api = open_https(
                config.pve_api_url,
                config.pve_token_id,
                config.pve_token_secret,
                verify,
                config.pve_timeout,
            )
        self._status: PveStatus | None = None
        self._status_at = 0.0

    def _call(self, method: str, path: str, **params: Any) -> Any:
        try:
            return getattr(self._api(path), method)(**params)
        except ResourceException as exc:
            raise PveCallError(f"{method.upper()} /{path}: {exc}") from None
        except FileNotFoundError:
            raise PveCallError("pvesh not found: is this a Proxmox VE node?") from None
        except subprocess.TimeoutExpired:
            raise PveCallError(f"{method.upper()} /{path}: PVE did not answer in time") from None
        except OSError as exc:
            raise PveCallError(f"{method.upper()} /{path}: {exc}") from None

    async def call(self, method: str, path: str, **params: Any) -> Any:
        return await asyncio.to_thread(self._call, method, path, **params)

    async def status(self) -> PveStatus:
        """Whether PVE answers, its version and the cluster name (cached, see STATUS_TTL_OK)."""
        if self._status is not None:
            ttl = STATUS_TTL_OK if self._status.ok else STATUS_TTL_FAILING
            if time.monotonic() - self._status_at < ttl:
                return self._status
        try:
            version = await self.call("get", "version")
            entries = await self.call("get", "cluster/status")
            cluster = next(
                (e["name"] for e in entries if e.get("type") == "cluster"),
                self.node,  # a standalone node is its own cluster (as the coordinator sees it)
            )
            self._status = PveStatus(True, str(version.get("version", "")), cluster, None)
        except PveCallError as exc:
            previous = self._status.cluster_name if self._status else ""
            self._status = PveStatus(False, "", previous, str(exc))
        self._status_at = time.monotonic()
        return self._status
