"""The coordinator's REST API as `pvesphere` calls it: aiohttp over HTTP(S), the bearer
token on every request, the envelope unwrapped (``data``, or the error's ``message`` and
``data.error``), and the WebSocket events stream.

An upload streams its file from disk in 1 MiB reads (file_payload.py): a 50 GiB image
costs the client no more memory than a small one.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from client.answers import ApiFailure, Unreachable, unwrap
from client.exit_codes import UsageError
from client.file_payload import FilePayload
from client.settings import Settings
from shared.deadlines import UPLOAD_STALL_SECONDS, upload_answer_seconds
from shared.turn_deadline import PeerStalled, TurnDeadline
from shared.tus import OFFSET_CONTENT_TYPE, TUS_VERSION, encode_metadata

API_PREFIX = "/api/v1"
# Ordinary calls answer in well under a second; an upload's answer waits for the agent to
# store and validate the whole image, so it has no overall limit: its deadlines run on the
# coordinator's turns (file_payload.py), each a minute longer than the coordinator's own on
# its agent (it answers 503 then, and that answer must still reach us).
CALL_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=30)
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)
UPLOAD_STALL = UPLOAD_STALL_SECONDS + 60
TUS = {"Tus-Resumable": TUS_VERSION}


def upload_answer_within(size: int) -> float:
    return upload_answer_seconds(size) + 60


def _ssl_context(cacert: Path | None) -> ssl.SSLContext | None:
    if cacert is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use {cacert} as the CA certificate: {exc}") from None


class Api:
    """One session with the coordinator; use as ``async with Api(settings) as api``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.url + API_PREFIX
        self._ssl = _ssl_context(settings.cacert)
        self._session: aiohttp.ClientSession | None = None
        # (attributes: a test shortens them)
        self.upload_stall = UPLOAD_STALL
        self.upload_answer_within = upload_answer_within

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.settings.token}"},
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Api in `async with`"
        return self._session

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"cannot reach the coordinator at {self.settings.url}: {exc}")

    async def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: aiohttp.ClientTimeout = CALL_TIMEOUT,
    ) -> Any:
        """``data`` of ``method path``; None-valued params are left out. ``timeout``: for a
        call whose answer waits on long work (a download)."""
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self.session.request(
                method, self.base + path, params=query, json=body, timeout=timeout
            ) as resp:
                return unwrap(resp.status, resp.reason or "", await resp.text())
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except TimeoutError:
            raise Unreachable(f"no answer from {self.settings.url} in {timeout.total:.0f} s") from None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params)

    async def upload(
        self,
        path: str,
        fields: Mapping[str, str],
        file: Path,
        on_bytes: Callable[[int], None],
    ) -> Any:
        """POST a multipart form, ``fields`` first and ``file`` last (the API needs that
        order), reporting every read of the file to ``on_bytes``."""
        form = aiohttp.MultipartWriter("form-data")
        for name, value in fields.items():
            part = form.append(value)
            part.set_content_disposition("form-data", name=name)
        deadline = TurnDeadline()
        payload = FilePayload(file, on_bytes, deadline, self.upload_stall, self.upload_answer_within)
        form.append_payload(payload).set_content_disposition("form-data", name="file", filename=file.name)
        try:
            async with deadline.bounded():
                async with self.session.post(self.base + path, data=form, timeout=UPLOAD_TIMEOUT) as resp:
                    return unwrap(resp.status, resp.reason or "", await resp.text())
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except PeerStalled as exc:
            raise Unreachable(f"the upload to {self.settings.url} stopped: {exc}") from None

    async def tus_create(self, fields: Mapping[str, str], file: Path) -> int:
        """A resumable upload of ``file`` (tus creation, ``fields`` as its metadata); its id."""
        headers = {
            **TUS,
            "Upload-Length": str(file.stat().st_size),
            "Upload-Metadata": encode_metadata({**fields, "filename": file.name}),
        }
        try:
            async with self.session.post(
                self.base + "/uploads", headers=headers, timeout=CALL_TIMEOUT
            ) as resp:
                if resp.status != 201:
                    unwrap(resp.status, resp.reason or "", await resp.text())  # (raises the API's error)
                return int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[1])
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    async def tus_offset(self, upload_id: int) -> tuple[int, int]:
        """(offset, length) of a resumable upload (tus HEAD)."""
        try:
            async with self.session.head(
                f"{self.base}/uploads/{upload_id}", headers=TUS, timeout=CALL_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    # (a HEAD answer has no body: the status says it)
                    raise ApiFailure(resp.status, f"upload {upload_id}: {resp.reason}", None)
                return int(resp.headers["Upload-Offset"]), int(resp.headers["Upload-Length"])
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    async def tus_patch(
        self, upload_id: int, file: Path, offset: int, on_bytes: Callable[[int], None]
    ) -> int:
        """The rest of ``file`` from ``offset`` (tus PATCH); the upload's new offset. The last
        byte's answer waits for the whole image to be checked, as a multipart upload's does."""
        size = file.stat().st_size
        deadline = TurnDeadline()
        payload = FilePayload(
            file,
            on_bytes,
            deadline,
            self.upload_stall,
            lambda _: self.upload_answer_within(size),
            offset=offset,
            content_type=OFFSET_CONTENT_TYPE,
        )
        headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_CONTENT_TYPE}
        url = f"{self.base}/uploads/{upload_id}"
        try:
            async with deadline.bounded():
                async with self.session.patch(
                    url, data=payload, headers=headers, timeout=UPLOAD_TIMEOUT
                ) as resp:
                    if resp.status != 204:
                        unwrap(resp.status, resp.reason or "", await resp.text())
                    return int(resp.headers["Upload-Offset"])
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except PeerStalled as exc:
            raise Unreachable(f"the upload to {self.settings.url} stopped: {exc}") from None

    @asynccontextmanager
    async def events(self, **filters: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """The events stream (contract §6.4), open: one JSON text message per change, the
        current state of every matching active object first."""
        query = {k: _param(v) for k, v in filters.items() if v is not None}
        try:
            ws = await self.session.ws_connect(self.base + "/events", params=query, heartbeat=30)
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiFailure(exc.status, f"the events stream was refused: {exc.message}", None) from None
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        async with ws:
            yield ws


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
