"""POST a file as multipart/form-data the way ``curl -F`` does, streamed from disk.

The body is generated piece by piece (the form fields, then the file read in 1 MiB
chunks, then the closing boundary). Its Content-Length is computed up front and the
request asks for ``Expect: 100-continue``, as curl does, so the server may refuse it
before the file moves. The client never holds more than one chunk of the file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

CHUNK = 1 << 20


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    seconds: float
    """From the first body byte handed to the connection until the whole answer was read."""
    answer_wait: float
    """From the last body byte handed to the connection until the whole answer was read."""


class StreamedForm:
    """The multipart body: ``length`` bytes produced by ``chunks()``; ``started`` marks its first byte."""

    def __init__(self, fields: Mapping[str, str], file_field: str, path: Path, file_name: str) -> None:
        self.boundary = "pvesphere-bench-" + secrets.token_hex(12)
        self.path = path
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        parts.append(
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        self.head = "".join(parts).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(self.head) + path.stat().st_size + len(self.tail)
        self.started: float | None = None
        self.finished: float | None = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = time.perf_counter()
        yield self.head
        with open(self.path, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                yield chunk
        yield self.tail
        self.finished = time.perf_counter()


async def _post(url: str, token: str, form: StreamedForm, timeout: float) -> Reply:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": form.content_type,
        "Content-Length": str(form.length),
    }
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(url, data=form.chunks(), headers=headers, expect100=True) as resp,
    ):
        raw = await resp.read()
        ended = time.perf_counter()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    started = form.started if form.started is not None else ended
    finished = form.finished if form.finished is not None else ended
    return Reply(resp.status, body, ended - started, ended - finished)


def post_file(
    url: str,
    token: str,
    fields: Mapping[str, str],
    path: Path,
    *,
    file_field: str = "file",
    file_name: str | None = None,
    timeout: float = 3600,
) -> Reply:
    """POST ``fields`` then the file at ``path`` (last, as the upload API wants it)."""
    form = StreamedForm(fields, file_field, path, file_name or path.name)
    return asyncio.run(_post(url, token, form, timeout))
