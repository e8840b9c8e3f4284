"""Downloading an image from an https URL into staging, where it becomes an upload's staged image.

The URL is hostile (agent/download_policy.py: https, allowed hosts only, checked before the
first connection and at every redirect). The body is written as ``upload-<id>-<random>.<fmt>.part``
(the name an upload gets, so everything that cleans up after uploads cleans up after
downloads), hashed as it arrives (sha256 always: the staged image is known by it; sha512 when
that is what the caller gave), checked against the caller's checksum, then validated and
staged exactly as an upload (agent/stage_image.py). Room is made in staging first.

Deadlines: 30 s to connect, 60 s without a byte is a stall, and the whole download the
import's deadline scaled by the file's size. A connection that breaks or stalls mid-body is
resumed up to MAX_RESUMES times with a Range request (agent/download_resume.py decides what
an answer means). A failed or canceled download leaves nothing in staging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from agent.download_policy import MAX_REDIRECTS, HostAllowlist, check_url, redirect_target
from agent.download_resume import (
    MAX_RESUMES,
    Resume,
    Validator,
    decide,
    range_headers,
    resume_delay,
    total_of,
)
from agent.errors import AgentFault
from agent.eviction import Evictor
from agent.stage_image import stage_if_valid
from agent.staging import Staging
from agent.transfer.manifests import StagedManifests
from agent.upload_ops import UploadOpFailed, UploadOps
from agent.upload_writer import HashingWriter, UploadDiskFull, UploadTooLarge
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.downloads import DownloadRequest, DownloadState, DownloadView
from shared.messages.uploads import Staged
from shared.version import VERSION

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 30.0
STALL_TIMEOUT = 60.0
READ_SIZE = 1 << 20
# Leave this much free on the staging disk besides the image (as an upload does).
SPACE_RESERVE = 256 << 20
REDIRECTS = (301, 302, 303, 307, 308)
KILL_WAIT = 10.0
USER_AGENT = f"pvesphere-agent/{VERSION}"


class DownloadFailed(UploadOpFailed):
    pass


class _Broken(AgentFault):
    """The connection broke or stalled: worth another try from where it stopped."""


@dataclass
class DownloadOp:
    req: DownloadRequest
    state: DownloadState = "running"
    phase: str = "starting"
    received: int = 0
    expected: int = 0
    attempts: int = 0
    deadline: Deadline | None = None
    staged: Staged | None = None
    error: str | None = None
    slug: ErrorSlug | None = None
    status: int | None = None
    canceled: str | None = None
    room_made: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> DownloadView:
        return DownloadView(
            upload_id=self.req.upload_id,
            state=self.state,
            phase=self.phase,
            received=self.received,
            expected=self.expected,
            attempts=self.attempts,
            staged=self.staged,
            error=self.error,
            error_slug=self.slug,
            status=self.status,
        )


@dataclass(frozen=True)
class DownloadSettings:
    allow: HostAllowlist
    tls: ssl.SSLContext
    timeout: float  # the import's deadline: base, and seconds per GiB of the file
    seconds_per_gib: float
    connect_timeout: float = CONNECT_TIMEOUT
    stall_timeout: float = STALL_TIMEOUT


class Downloader(UploadOps[DownloadOp]):
    def __init__(
        self, staging: Staging, manifests: StagedManifests, evictor: Evictor, settings: DownloadSettings
    ) -> None:
        self.staging = staging
        self.manifests = manifests
        self.evictor = evictor
        self.s = settings
        super().__init__("download", KILL_WAIT)

    def start(self, req: DownloadRequest) -> DownloadOp:
        """The download for ``req.upload_id`` (a running or finished one is answered as it is);
        DownloadRefused for a URL this agent will not fetch (before any connection)."""
        op = self.ops.get(req.upload_id)
        if op is not None and op.state != "failed":
            return op
        check_url(req.url, self.s.allow)
        op = DownloadOp(req)
        self.ops[req.upload_id] = op
        op.task = asyncio.create_task(self._run(op), name=f"download-{req.upload_id}")
        return op

    async def _run(self, op: DownloadOp) -> None:
        req = op.req
        name = self.staging.new_name("upload", req.upload_id, req.format)
        part = self.staging.part_path(name)
        staged = await self.settle(op, part, self._make(op, name, part), ErrorSlug.DOWNLOAD_FAILED)
        if staged is None:
            return
        op.staged = staged
        op.state, op.phase = "done", "done"
        self.ended("done")
        log.info(
            "download for upload %s: %s staged as %s (%d tries)", req.upload_id, req.url, name, op.attempts
        )

    async def _make(self, op: DownloadOp, name: str, part: Path) -> Staged:
        """The file downloaded to ``part``, its checksum checked, validated and staged as ``name``."""
        req = op.req
        sha256, sha512 = await self._fetch(op, part)
        op.phase = "checking the checksum"
        _check_sum("sha256", req.sha256, sha256)
        _check_sum("sha512", req.sha512, sha512)
        op.phase = "validating"
        return await stage_if_valid(
            self.staging,
            self.manifests,
            req.upload_id,
            req.format,
            req.max_virtual_size,
            req.label,
            name,
            part,
            sha256,
        )

    async def _fetch(self, op: DownloadOp, part: Path) -> tuple[str, str | None]:
        """The file written to ``part``, resumed after breaks; (sha256, sha512 or None)."""
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.s.connect_timeout,
            sock_connect=self.s.connect_timeout,
            sock_read=self.s.stall_timeout,
        )
        connector = aiohttp.TCPConnector(ssl=self.s.tls, limit=1)
        # auto_decompress off: the bytes as served are what the checksum is of.
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False, trust_env=False
        ) as session:
            writer = _Writer(part, op)
            try:
                await self._tries(op, session, writer)
                sha256 = await writer.w.finish()
                sha512 = writer.w.sha512.hexdigest() if writer.w.sha512 is not None else None
                return sha256, sha512
            finally:
                await writer.close()

    async def _tries(self, op: DownloadOp, session: aiohttp.ClientSession, writer: _Writer) -> None:
        resumes = 0
        while True:
            op.attempts += 1
            op.phase = "downloading" if resumes == 0 else f"downloading (resumed at byte {writer.w.size})"
            headers = range_headers(writer.w.size, writer.validator) if writer.validator is not None else {}
            try:
                async with self._open(session, op, headers) as resp:
                    if await self._take(op, resp, writer):
                        return
            except _Broken as exc:
                if writer.validator is None:  # no answer yet: nothing to resume
                    raise DownloadFailed(502, ErrorSlug.DOWNLOAD_FAILED, str(exc)) from None
                log.info("download for upload %s: %s after %d bytes", op.req.upload_id, exc, writer.w.size)
                if resumes >= MAX_RESUMES:
                    raise DownloadFailed(
                        502, ErrorSlug.DOWNLOAD_FAILED, f"{exc}; gave up after {resumes + 1} tries"
                    ) from None
            resumes += 1
            delay = resume_delay(resumes)
            if op.deadline is not None and delay >= op.deadline.remaining():
                raise DownloadFailed(504, ErrorSlug.DOWNLOAD_FAILED, f"the download {op.deadline.missed()}")
            await asyncio.sleep(delay)

    async def _take(self, op: DownloadOp, resp: aiohttp.ClientResponse, writer: _Writer) -> bool:
        """Write what ``resp`` brings; True once the file is complete, False when the answer
        was of no use (the partial copy dropped). _Broken when the body broke off."""
        host = urlsplit(str(resp.url)).hostname
        if resp.status not in (200, 206):
            status = 400 if 400 <= resp.status < 500 else 502
            raise DownloadFailed(
                status,
                ErrorSlug.DOWNLOAD_FAILED,
                f"{host} answered {resp.status} {resp.reason or ''}".strip(),
            )
        now = Validator(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        offset = writer.w.size
        content_range = resp.headers.get("Content-Range")
        before = writer.validator or now
        decision = decide(offset, resp.status, content_range, before, now) if offset else Resume.RESTART
        if decision is Resume.REFETCH:
            log.info(
                "download for upload %s: %s answered %s %s to a resume: starting over",
                op.req.upload_id,
                host,
                resp.status,
                content_range,
            )
            await writer.restart()
            return False
        if decision is Resume.RESTART and offset:
            log.info(
                "download for upload %s: %s sent the whole file again: starting over", op.req.upload_id, host
            )
            await writer.restart()
            offset = 0
        if decision is Resume.RESTART:
            writer.validator = now
        total = total_of(resp.status, content_range, resp.content_length, offset)
        if total is not None and total > op.req.max_bytes:
            raise DownloadFailed(
                413,
                ErrorSlug.TOO_LARGE,
                f"the file is {total} bytes, more than the limit of {op.req.max_bytes}",
            )
        op.expected = total or 0
        await self._make_room(op, total)
        if op.deadline is None:
            op.deadline = Deadline(
                scaled_timeout(self.s.timeout, self.s.seconds_per_gib, total or op.req.max_bytes)
            )
        try:
            async with asyncio.timeout(op.deadline.remaining()):
                async for chunk in _pieces(resp):
                    await writer.write(chunk)
        except UploadTooLarge:
            raise DownloadFailed(
                413, ErrorSlug.TOO_LARGE, f"the file grew past the limit of {op.req.max_bytes} bytes"
            ) from None
        except UploadDiskFull as exc:
            raise DownloadFailed(507, ErrorSlug.NO_SPACE, str(exc)) from None
        except TimeoutError as exc:
            if op.deadline.passed():
                raise DownloadFailed(
                    504, ErrorSlug.DOWNLOAD_FAILED, f"the download {op.deadline.missed()}"
                ) from None
            raise _Broken(f"{host} sent nothing for {self.s.stall_timeout:.0f} s") from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise _Broken(f"the connection to {host} broke: {exc.__class__.__name__}") from exc
        if total is not None and writer.w.size < total:
            raise _Broken(f"{host} ended the body at byte {writer.w.size} of {total}")
        return True

    @contextlib.asynccontextmanager
    async def _open(
        self, session: aiohttp.ClientSession, op: DownloadOp, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The answer to a GET of the URL, redirects followed (each checked: download_policy)."""
        url: str = op.req.url
        # The bytes as stored (no Content-Encoding): what the checksum is of.
        headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **headers}
        for redirects in range(MAX_REDIRECTS + 2):
            host = urlsplit(url).hostname
            try:
                resp = await session.get(url, headers=headers, allow_redirects=False)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise _Broken(f"could not reach {host}: {exc.__class__.__name__}: {exc}") from exc
            if resp.status in REDIRECTS:
                location = resp.headers.get("Location")
                resp.release()
                url = redirect_target(url, location, redirects + 1, self.s.allow)
                continue
            try:
                yield resp
            finally:
                resp.release()
            return

    async def _make_room(self, op: DownloadOp, total: int | None) -> None:
        """Room in staging for the file (once), or 507."""
        if op.room_made:
            return
        op.phase = "making room in staging"
        if total is not None:  # (of unknown size: nothing evicted ahead, a full disk is a 507)
            purpose = f"room for {total} bytes of the download for upload {op.req.upload_id}"
            with contextlib.suppress(OSError):
                await self.evictor.make_room(total, SPACE_RESERVE, purpose)
        free = self.staging.free_bytes()
        if total is not None and total + SPACE_RESERVE > free:
            raise DownloadFailed(
                507, ErrorSlug.NO_SPACE, f"staging disk has {free} bytes free, the file needs {total}"
            )
        op.room_made = True
        op.phase = "downloading"


def _check_sum(kind: str, expected: str | None, got: str | None) -> None:
    if expected is not None and got != expected:
        raise DownloadFailed(
            422, ErrorSlug.CHECKSUM_MISMATCH, f"{kind} of the download is {got}, expected {expected}"
        )


async def _pieces(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    while chunk := await resp.content.read(READ_SIZE):
        yield chunk


class _Writer:
    """The part file and its hashes, kept across tries; ``restart`` empties both."""

    def __init__(self, part: Path, op: DownloadOp) -> None:
        self.part = part
        self.op = op
        self.w = self._new()
        # What identified the file when the bytes written came (None: none yet).
        self.validator: Validator | None = None

    def _new(self) -> HashingWriter:
        return HashingWriter(self.part, self.op.req.max_bytes, with_sha512=self.op.req.sha512 is not None)

    async def write(self, chunk: bytes) -> None:
        await self.w.write(chunk)
        self.op.received = self.w.size

    async def restart(self) -> None:
        await self.close()
        self.part.unlink(missing_ok=True)
        self.w = self._new()
        self.validator = None
        self.op.received = 0

    async def close(self) -> None:
        await self.w.drain_quietly()
        self.w.close()
