"""How the coordinator and peer agents call an agent. Nobody else builds agent URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import msgspec

from agent.errors import AgentFault
from shared.error_slugs import ErrorSlug
from shared.errors import ServiceError
from shared.messages import decode, encode
from shared.messages.clones import CloneRequest, CloneView
from shared.messages.downloads import DownloadRequest, DownloadView
from shared.messages.exports import ExportAsk, ExportRequest, ExportSource, ExportView
from shared.messages.health import AgentHealth, ErrorBody
from shared.messages.imports import CancelRequest, ImportRequest, ImportView
from shared.messages.transfers import (
    Hop,
    ManifestView,
    ReceiveRemoved,
    ReceiveView,
    Seed,
    SessionOpened,
    SessionRequest,
    TransferRequest,
    TransferStarted,
)
from shared.messages.uploads import (
    ResumableHeld,
    ResumablePatched,
    Staged,
    StagedRemoved,
    StagingReport,
    UploadRemoved,
)
from shared.messages.vms import VmListing, VmRemoved
from shared.tls import untrusted_certificate

SESSION_HEADER = "X-Pvesphere-Session"
M = TypeVar("M")


class AgentError(ServiceError, AgentFault):
    """The agent answered with an error (``status``, ``error`` slug, ``message``), or with an
    answer that is not the message it should be (``bad_response``)."""


class AgentUnreachable(AgentFault):
    """The agent did not answer (down, or the connection broke)."""


class AgentUntrusted(AgentUnreachable):
    """The agent's certificate was refused (another CA, another name): no retry can fix that."""


def _slug(text: str) -> ErrorSlug:
    """A slug this side knows; a newer agent's unknown one reads as agent_error."""
    try:
        return ErrorSlug(text)
    except ValueError:
        return ErrorSlug.AGENT_ERROR


class AgentClient:
    """``credential``: the agent's node's own (the coordinator giving orders); peers have none,
    their tickets speak for them. ``session`` checks the agent's certificate (its connector's
    SSL context: the CA of the agents' cluster). Every answer is the message struct of its
    route (shared/messages/), checked as it arrives."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, credential: str | None = None) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {credential}"} if credential else {}

    async def _call(
        self,
        answer: type[M],
        method: str,
        path: str,
        *,
        timeout: float | None = 30,
        extra_headers: dict[str, str] | None = None,
        base: str | None = None,
        message: Any = None,
        **kw: Any,
    ) -> M:
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        headers = {**self.headers, **(extra_headers or {})}
        if message is not None:
            kw["data"] = encode(message)
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, (base or self.base) + path, headers=headers, timeout=client_timeout, **kw
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, raw)
                try:
                    return decode(answer, raw)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise AgentError(
                        502,
                        ErrorSlug.BAD_RESPONSE,
                        f"agent {self.base}: {method} {path} answered no {answer.__name__}: {exc}",
                    ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            untrusted = untrusted_certificate(exc)
            if untrusted is not None:
                text = f"agent {self.base}: its certificate is not trusted ({untrusted})"
                raise AgentUntrusted(text) from exc
            raise AgentUnreachable(f"agent {self.base}: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    def _error(status: int, raw: bytes) -> AgentError:
        try:
            body = decode(ErrorBody, raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            text = raw.decode(errors="replace")[:300] or f"agent answered {status}"
            return AgentError(status, ErrorSlug.BAD_RESPONSE, text)
        return AgentError(status, _slug(body.error), body.message or f"agent answered {status}")

    async def health(self) -> AgentHealth:
        return await self._call(AgentHealth, "GET", "/health", timeout=10)

    async def upload(
        self,
        upload_id: int,
        fmt: str,
        max_bytes: int,
        max_virtual_size: int,
        body: AsyncIterator[bytes | memoryview],
        file_name: str = "",
        size_hint: int | None = None,
    ) -> Staged:
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
        return await self._call(
            Staged, "PUT", f"/v1/uploads/{upload_id}", params=params, data=body, timeout=None
        )

    async def create_resumable(self, upload_id: int, length: int, max_bytes: int) -> ResumableHeld:
        """A resumable upload's partial file, with room for ``length`` bytes (507 if none)."""
        params = {"length": str(length), "max_bytes": str(max_bytes)}
        return await self._call(ResumableHeld, "PUT", f"/v1/resumable/{upload_id}", params=params)

    async def resumable_offset(self, upload_id: int) -> ResumableHeld:
        return await self._call(ResumableHeld, "GET", f"/v1/resumable/{upload_id}")

    async def patch_resumable(
        self,
        upload_id: int,
        offset: int,
        length: int,
        fmt: str,
        max_virtual_size: int,
        body: AsyncIterator[bytes | memoryview],
        file_name: str = "",
    ) -> ResumablePatched:
        """``body`` appended at ``offset``; the last byte of ``length`` stages the image."""
        params = {
            "offset": str(offset),
            "length": str(length),
            "format": fmt,
            "max_virtual_size": str(max_virtual_size),
            "name": file_name,
        }
        return await self._call(
            ResumablePatched, "PATCH", f"/v1/resumable/{upload_id}", params=params, data=body, timeout=None
        )

    async def staging(self) -> StagingReport:
        return await self._call(StagingReport, "GET", "/v1/staging")

    async def delete_upload(self, upload_id: int) -> UploadRemoved:
        return await self._call(UploadRemoved, "DELETE", f"/v1/uploads/{upload_id}")

    async def delete_staged(self, name: str) -> StagedRemoved:
        return await self._call(StagedRemoved, "DELETE", f"/v1/staging/{name}")

    async def start_import(self, request: ImportRequest) -> ImportView:
        return await self._call(ImportView, "POST", "/v1/imports", message=request)

    async def get_import(self, key: str) -> ImportView:
        return await self._call(ImportView, "GET", f"/v1/imports/{key}")

    async def cancel_import(self, key: str, reason: str) -> ImportView:
        """Stop a running import (PVE task, unfinished VM); answers once it has ended."""
        return await self._call(
            ImportView, "POST", f"/v1/imports/{key}/cancel", message=CancelRequest(reason), timeout=600
        )

    async def start_download(self, request: DownloadRequest) -> DownloadView:
        """Start downloading a URL into staging; a URL the agent will not fetch is a 400 AgentError."""
        return await self._call(DownloadView, "POST", "/v1/downloads", message=request)

    async def get_download(self, upload_id: int) -> DownloadView:
        return await self._call(DownloadView, "GET", f"/v1/downloads/{upload_id}")

    async def cancel_download(self, upload_id: int, reason: str) -> DownloadView:
        """Stop a running download; answers once it has ended, its partial file removed."""
        return await self._call(
            DownloadView,
            "POST",
            f"/v1/downloads/{upload_id}/cancel",
            message=CancelRequest(reason),
            timeout=60,
        )

    async def check_export(self, ask: ExportAsk) -> ExportSource:
        """What exporting that VM's disk would read, or the refusal (404, 409, 400) as AgentError."""
        return await self._call(ExportSource, "POST", "/v1/exports/check", message=ask)

    async def start_export(self, request: ExportRequest) -> ExportView:
        return await self._call(ExportView, "POST", "/v1/exports", message=request)

    async def get_export(self, upload_id: int) -> ExportView:
        return await self._call(ExportView, "GET", f"/v1/exports/{upload_id}")

    async def cancel_export(self, upload_id: int, reason: str) -> ExportView:
        """Stop a running export; answers once it has ended, its partial copy removed."""
        return await self._call(
            ExportView, "POST", f"/v1/exports/{upload_id}/cancel", message=CancelRequest(reason), timeout=60
        )

    async def start_clone(self, request: CloneRequest) -> CloneView:
        return await self._call(CloneView, "POST", "/v1/clones", message=request)

    async def get_clone(self, key: str) -> CloneView:
        return await self._call(CloneView, "GET", f"/v1/clones/{key}")

    async def cancel_clone(self, key: str, reason: str) -> CloneView:
        """Stop a running clone (its PVE task, the unfinished VM); answers once it has ended."""
        return await self._call(
            CloneView, "POST", f"/v1/clones/{key}/cancel", message=CancelRequest(reason), timeout=600
        )

    async def delete_vm(self, vmid: int, key_prefix: str, *, if_idle: bool = False) -> VmRemoved:
        """Destroy the VM if it is ours under ``key_prefix``; ``if_idle``: 409 vm_busy instead
        of waiting for a create or import still running on it."""
        params = {"key_prefix": key_prefix, "if_idle": "1" if if_idle else "0"}
        return await self._call(VmRemoved, "DELETE", f"/v1/vms/{vmid}", params=params, timeout=600)

    async def list_vms(self, vmid_min: int, vmid_max: int) -> VmListing:
        """The node's VMs in the range and in the agent's VM journal (candidates for the sweep)."""
        params = {"vmid_min": str(vmid_min), "vmid_max": str(vmid_max)}
        return await self._call(VmListing, "GET", "/v1/vms", params=params)

    # -- node-to-node transfers (see agent/transfer/) ----------------------------------

    async def start_transfer(self, request: TransferRequest) -> TransferStarted:
        """Coordinator -> source agent: send a staged image along a chain of hops."""
        return await self._call(TransferStarted, "POST", "/v1/transfers", message=request)

    async def receive_state(self, task_id: int, task_uid: str) -> ReceiveView:
        return await self._call(
            ReceiveView, "GET", f"/v1/receives/{task_id}", params={"uid": task_uid}, timeout=10
        )

    async def stop_receive(self, task_id: int, task_uid: str) -> ReceiveView:
        return await self._call(
            ReceiveView, "POST", f"/v1/receives/{task_id}/stop", params={"uid": task_uid}, timeout=10
        )

    async def remove_receive(self, task_id: int, task_uid: str) -> ReceiveRemoved:
        return await self._call(ReceiveRemoved, "DELETE", f"/v1/receives/{task_id}", params={"uid": task_uid})

    async def open_session(
        self,
        task_id: int,
        ticket: str,
        next_hops: list[Hop],
        manifest: bytes,
        seeds: list[Seed],
        codecs: tuple[str, ...] = (),
        sender: str = "",
    ) -> SessionOpened:
        """Peer -> target agent: present a ticket and the copy's chunk manifest; returns the
        session, the offset to send from and the chunks the target needs."""
        return await self._call(
            SessionOpened,
            "POST",
            f"/v1/receives/{task_id}/session",
            message=SessionRequest(ticket, next_hops, manifest, seeds, list(codecs), sender),
        )

    async def staged_manifest(self, name: str) -> ManifestView:
        """Coordinator -> source agent: the digest of a staged image's chunk manifest
        ("building" until it is made)."""
        return await self._call(ManifestView, "GET", f"/v1/staged/{name}/manifest", timeout=30)

    async def stream(
        self,
        task_id: int,
        session: str,
        frames: AsyncIterator[bytes | memoryview],
        length: int | None,
        plain_url: str | None = None,
    ) -> ReceiveView:
        """Peer -> target agent: the frames of one byte range (a Content-Length body; None:
        chunked, after Expect: 100-continue); to ``plain_url`` instead, in the clear, on the
        insecure data plane."""
        headers = {SESSION_HEADER: session}
        if length is not None:
            headers["Content-Length"] = str(length)
        return await self._call(
            ReceiveView,
            "PUT",
            f"/v1/receives/{task_id}/data",
            data=frames,
            extra_headers=headers,
            timeout=None,
            base=plain_url,
            expect100=length is None,
        )
