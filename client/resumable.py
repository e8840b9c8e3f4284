"""`upload --resumable`: the image sent with the tus protocol (the API's /uploads), so that
an interrupted upload goes on from where it stopped rather than from its first byte.

A PATCH that breaks off (the network, a coordinator or agent restart, a 503) is retried
after a backoff: HEAD says how many bytes the server holds, and the next PATCH sends the
rest from there. After ``RETRIES`` failures in a row the command gives up, saying how to
go on later (``--resume ID``: the server keeps the bytes until the upload expires).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from client.answers import ApiFailure, Unreachable
from shared.backoff import exponential

if TYPE_CHECKING:
    from client.api import Api
    from client.progress import ByteBar

RETRIES = 8
FIRST_WAIT, MOST_WAIT = 1.0, 30.0
# Answers after which the same PATCH may work: the client was slow (408), another PATCH has
# not let go yet (423), the coordinator or the agent is away for a moment.
TRANSIENT = (408, 423, 500, 502, 503, 504)


class GaveUp(Unreachable):
    """The upload could not go on for ``RETRIES`` tries; the message says how to resume it."""


async def send(
    api: Api,
    file: Path,
    upload_id: int,
    bar: ByteBar,
    note: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every byte of ``file`` into resumable upload ``upload_id`` (from where it stands)."""
    size = file.stat().st_size
    failures = 0
    while True:
        try:
            offset, length = await api.tus_offset(upload_id)
            if length != size:
                raise ApiFailure(
                    409, f"upload {upload_id} is of a file of {length} bytes; {file} has {size}", None
                )
            bar.at(offset)
            if offset == size:
                return
            await api.tus_patch(upload_id, file, offset, bar.advance)
            failures = 0
        except (Unreachable, ApiFailure) as exc:
            if isinstance(exc, ApiFailure) and exc.status not in TRANSIENT:
                raise
            failures += 1
            if failures > RETRIES:
                raise GaveUp(f"{exc}; go on later with --resume {upload_id}") from None
            wait = exponential(failures, FIRST_WAIT, MOST_WAIT)
            note(f"upload {upload_id} interrupted ({exc}); going on in {wait:.0f} s")
            await sleep(wait)
