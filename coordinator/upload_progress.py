"""An upload's bytes while they stream, written to its row for everyone else to watch.

The uploader sees its own progress; before this, the row said nothing until the file was
stored, so an upload was the one kind of work live events (coordinator/events/) could not
show. The streaming coordinator writes ``received_bytes`` (and the request's length as
``expected_bytes``) at most once a second, only while the row is ``uploading``: one small
UPDATE a second per upload, which the events reader picks up by its ``updated_at``.

A write that fails (the database away for a moment) is skipped, never the upload: the next
second writes the newer figure, and the file's bytes do not depend on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.models import TemplateUpload
from coordinator.states.upload import UploadStatus

log = logging.getLogger(__name__)

INTERVAL = 1.0
WRITE_TIMEOUT = 5.0


async def report_received(
    db: async_sessionmaker[AsyncSession],
    upload_id: int,
    received: Callable[[], int],
    expected: int | Callable[[], int],
    interval: float = INTERVAL,
) -> None:
    """Write ``received()`` to the upload's row every ``interval`` s while it changes; runs
    until cancelled (the stream's end). ``expected`` may change as it goes (a download
    learns the file's size from the server's answer)."""
    written = 0
    while True:
        await asyncio.sleep(interval)
        now = received()
        total = expected() if callable(expected) else expected
        if now == written:
            continue
        try:
            async with asyncio.timeout(WRITE_TIMEOUT), db() as session:
                await session.execute(
                    update(TemplateUpload)
                    .where(TemplateUpload.id == upload_id, TemplateUpload.status == UploadStatus.UPLOADING)
                    .values(received_bytes=now, expected_bytes=total)
                )
                await session.commit()
            written = now
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.debug("upload %s: its progress (%d bytes) not written: %r", upload_id, now, exc)
