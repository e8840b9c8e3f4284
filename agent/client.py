"""How the coordinator and peer agents call an agent. Nobody else builds agent URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from shared.tls import untrusted_certificate

SESSION_HEADER = "X-Pvesphere-Session"


class AgentError(Exception):
    """The agent answered with an error (``status``, ``error`` slug, ``message``)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class AgentUnreachable(Exception):
    """The agent did not answer (down, or the connection broke)."""


class AgentUntrusted(AgentUnreachable):
    """The agent's certificate was refused (another CA, another name): no retry can fix that."""


class AgentClient:
    """``credential``: the agent's node's own (the coordinator giving orders); peers have none,
    their tickets speak for them. ``session`` checks the agent's certificate (its connector's
    SSL context: the CA of the agents' cluster)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, credential: str | None = None) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {credential}"} if credential else {}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = 30,
        extra_headers: dict[str, str] | None = None,
        base: str | None = None,
        **kw: Any,
    ) -> Any:
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        headers = {**self.headers, **(extra_headers or {})}
        try:
            async with self.session.request(
                method, (base or self.base) + path, headers=headers, timeout=client_timeout, **kw
            ) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {"error": "bad_response", "message": (await resp.text())[:300]}
                if resp.status >= 400:
                    raise AgentError(
                        resp.status,
                        str(body.get("error", "agent_error")),
                        str(body.get("message", f"agent answered {resp.status}")),
                    )
                return body
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            untrusted = untrusted_certificate(exc)
            if untrusted is not None:
                message = f"agent {self.base}: its certificate is not trusted ({untrusted})"
                raise AgentUntrusted(message) from exc
            raise AgentUnreachable(f"agent {self.base}: {exc.__class__.__name__}: {exc}") from exc

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health", timeout=10)
        return result

    async def upload(
        self,
        upload_id: int,
        fmt: str,
        max_bytes: int,
        max_virtual_size: int,
        body: AsyncIterator[bytes | memoryview],
        file_name: str = "",
        size_hint: int | None = None,
    ) -> dict[str, Any]:
        """Stream an image into the agent's staging; returns what the agent stored.

        ``file_name`` (the client's, sanitised) is how the agent's messages name the image;
        ``size_hint`` the most the image can be, if known: the agent makes room for it."""
        params = {
            "format": fmt,
            "max_bytes": str(max_bytes),
            "max_virtual_size": str(max_virtual_size),
            "name": file_name,
        }
        if size_hint is not None:
            params["size_hint"] = str(size_hint)
        result: dict[str, Any] = await self._call(
            "PUT", f"/v1/uploads/{upload_id}", params=params, data=body, timeout=None
        )
        return result

    async def staging(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/staging")
        return result

    async def delete_upload(self, upload_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", f"/v1/uploads/{upload_id}")
        return result

    async def delete_staged(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", f"/v1/staging/{name}")
        return result

    async def start_import(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/v1/imports", json=request)
        return result

    async def get_import(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/imports/{key}")
        return result

    async def cancel_import(self, key: str, reason: str) -> dict[str, Any]:
        """Stop a running import (PVE task, unfinished VM); answers once it has ended."""
        result: dict[str, Any] = await self._call(
            "POST", f"/v1/imports/{key}/cancel", json={"reason": reason}, timeout=600
        )
        return result

    async def delete_vm(self, vmid: int, key_prefix: str, *, if_idle: bool = False) -> dict[str, Any]:
        """Destroy the VM if it is ours under ``key_prefix``; ``if_idle``: 409 vm_busy instead
        of waiting for a create or import still running on it."""
        params = {"key_prefix": key_prefix, "if_idle": "1" if if_idle else "0"}
        result: dict[str, Any] = await self._call("DELETE", f"/v1/vms/{vmid}", params=params, timeout=600)
        return result

    async def list_vms(self, vmid_min: int, vmid_max: int) -> dict[str, Any]:
        """The node's VMs in the range and in the agent's VM journal (candidates for the sweep)."""
        params = {"vmid_min": str(vmid_min), "vmid_max": str(vmid_max)}
        result: dict[str, Any] = await self._call("GET", "/v1/vms", params=params)
        return result

    # -- node-to-node transfers (see agent/transfer/) ----------------------------------

    async def start_transfer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Coordinator -> source agent: send a staged image along a chain of hops."""
        result: dict[str, Any] = await self._call("POST", "/v1/transfers", json=request)
        return result

    async def receive_state(self, task_id: int, task_uid: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", f"/v1/receives/{task_id}", params={"uid": task_uid}, timeout=10
        )
        return result

    async def remove_receive(self, task_id: int, task_uid: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "DELETE", f"/v1/receives/{task_id}", params={"uid": task_uid}
        )
        return result

    async def open_session(
        self, task_id: int, ticket: str, next_hops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Peer -> target agent: present a ticket; returns the session and the offset to send from."""
        result: dict[str, Any] = await self._call(
            "POST", f"/v1/receives/{task_id}/session", json={"ticket": ticket, "next_hops": next_hops}
        )
        return result

    async def stream(
        self,
        task_id: int,
        session: str,
        frames: AsyncIterator[bytes | memoryview],
        length: int,
        plain_url: str | None = None,
    ) -> dict[str, Any]:
        """Peer -> target agent: the frames of one byte range (a Content-Length body, no chunking);
        to ``plain_url`` instead, in the clear, on the insecure data plane."""
        headers = {SESSION_HEADER: session, "Content-Length": str(length)}
        result: dict[str, Any] = await self._call(
            "PUT",
            f"/v1/receives/{task_id}/data",
            data=frames,
            extra_headers=headers,
            timeout=None,
            base=plain_url,
        )
        return result
