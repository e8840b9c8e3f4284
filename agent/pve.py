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
from agent.errors import AgentFault
from agent.pvesh_session import local_api
from shared.pve_api import open_https
from shared.pve_outage import transient_reason

# Every pvesh call is a process of its own (on PVE a Perl interpreter loading the API, the
# emulator's Python ~0.2 CPU s): the heartbeat's status check, two calls, cost ~8 % of a
# core per node when made every 5 s. A healthy status is checked again once a minute, a
# failing one every 5 s (to see PVE come back soon).
STATUS_TTL_OK = 60.0
STATUS_TTL_FAILING = 5.0


class PveCallError(AgentFault):
    """A PVE call failed; the message is PVE's own (or why PVE could not be asked).

    ``status``: the HTTP status PVE answered with (pvesh fakes 500 for its own failures),
    None when no answer came; with the message, it tells a PVE that said no from one that
    did not answer (shared/pve_outage.py)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
        self._config = config
        self._local = config.pve_backend == "local"
        self._api = self._open(config.pve_timeout)
        self._status: PveStatus | None = None
        self._status_at = 0.0

    def _open(self, timeout: float) -> ProxmoxAPI:
        config = self._config
        if self._local:
            return local_api(timeout)
        verify: bool | str = (config.pve_ca_file or True) if config.pve_verify_ssl else False
        return open_https(config.pve_api_url, config.pve_token_id, config.pve_token_secret, verify, timeout)

    @staticmethod
    def _call(api: ProxmoxAPI, method: str, path: str, params: dict[str, Any]) -> Any:
        """Every way a call can fail becomes a PveCallError with the reason: the caller
        (an import) must end with that reason, never be left waiting."""
        what = f"{method.upper()} /{path}"
        try:
            return getattr(api(path), method)(**params)
        except ResourceException as exc:
            raise PveCallError(f"{what}: {exc}", exc.status_code) from None
        except FileNotFoundError:
            raise PveCallError("pvesh not found: is this a Proxmox VE node?") from None
        except subprocess.TimeoutExpired as exc:
            raise PveCallError(f"{what}: PVE did not answer within {exc.timeout:.0f} s") from None
        except OSError as exc:
            raise PveCallError(f"{what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. ValueError from a NUL byte in an argument
            raise PveCallError(f"{what}: {exc.__class__.__name__}: {exc}") from None

    async def call(self, method: str, path: str, **params: Any) -> Any:
        return await self._watched(self._api, method, path, params)

    async def call_for_task(self, seconds: float, method: str, path: str, **params: Any) -> Any:
        """A call that starts a PVE task; returns its UPID. pvesh (the local backend) runs
        the task in the foreground, so the call may take up to ``seconds``; the https API
        answers at once."""
        api = self._open(seconds) if self._local else self._api
        return await self._watched(api, method, path, params)

    async def _watched(self, api: ProxmoxAPI, method: str, path: str, params: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(self._call, api, method, path, params)
        except PveCallError as exc:
            if transient_reason(exc.status, str(exc)) is not None and self._status is not None:
                # PVE stopped answering: the next heartbeat asks again instead of reporting
                # the last minute's "ok", so work waits for PVE rather than failing on it.
                self._status_at = -STATUS_TTL_OK
            raise

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
