"""The database side of a resumable (tus) upload, between and during its requests.

Its template_upload row is reserved as a multipart upload's is (coordinator/uploads.py)
and stays ``uploading`` until the last byte is in; a resumable_upload row beside it keeps
the declared length and the plan's inputs. Between PATCHes the upload row's lease is
nobody's and runs out at the upload's expiry, so the janitor's sweep of uploads whose lease
ran out (uploads.expire_abandoned) gives up exactly the uploads idle for longer than
``resumable_upload_expiry``, and never one merely waiting for its next PATCH. The one PATCH
that may stream at a time holds the resumable row's own lease (short, kept while it
streams), so a coordinator that dies mid-PATCH holds nothing for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.models import ResumableUpload, TemplateUpload
from coordinator.db.types import utcnow
from coordinator.jobs import engine
from coordinator.states import upload as upload_states
from coordinator.upload_plan import UploadPlan, plan_of_upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumable:
    """A resumable upload as a request finds it."""

    upload: TemplateUpload
    length: int
    sync_node_ids: list[int]
    auto_sync: bool
    rollout: bool

    @property
    def expires_at(self) -> datetime | None:
        return self.upload.lease_expires_at


async def open_upload(
    db: async_sessionmaker[AsyncSession],
    upload_id: int,
    length: int,
    sync_node_ids: list[int],
    auto_sync: bool,
    rollout: bool,
    expiry: float,
) -> datetime:
    """The reserved upload made resumable: waiting for its first PATCH; its expiry."""
    until = utcnow() + timedelta(seconds=expiry)
    async with db() as session:
        session.add(
            ResumableUpload(
                id=upload_id,
                upload_length=length,
                sync_node_ids=json.dumps(sync_node_ids),
                auto_sync=auto_sync,
                rollout=rollout,
            )
        )
        await upload_states.wait_for_patch(session, upload_id, until, 0)
        await session.commit()
    return until


async def find(db: async_sessionmaker[AsyncSession], upload_id: int) -> Resumable | None:
    async with db() as session:
        row = await session.get(ResumableUpload, upload_id)
        upload = await session.get(TemplateUpload, upload_id)
    if row is None or upload is None:
        return None
    return Resumable(upload, row.upload_length, json.loads(row.sync_node_ids), row.auto_sync, row.rollout)


def patch_owner() -> str:
    """Who holds a PATCH's turn: this process and this request (a second PATCH of the same
    process is another holder: engine.claim would take it for the same one)."""
    return f"{engine.OWNER[:55]}:{secrets.token_hex(4)}"


async def claim_patch(
    db: async_sessionmaker[AsyncSession], upload_id: int, owner: str, lease: float, wait: float
) -> bool:
    """The one PATCH's turn for ``owner`` (another's lease must end first: at most ``wait`` s)."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + wait
    while True:
        now = utcnow()
        free = or_(ResumableUpload.lease_owner.is_(None), ResumableUpload.lease_expires_at < now)
        if await _set_lease(db, upload_id, free, owner, now + timedelta(seconds=lease)):
            return True
        if loop.time() >= ends:
            return False
        await asyncio.sleep(0.2)


async def keep_patching(
    db: async_sessionmaker[AsyncSession], upload_id: int, owner: str, lease: float, expiry: float
) -> None:
    """While a PATCH streams: its turn renewed and the upload's expiry moved on, every third
    of ``lease`` (until canceled)."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            held = ResumableUpload.lease_owner == owner
            await _set_lease(db, upload_id, held, owner, utcnow() + timedelta(seconds=lease))
            await wait_for_patch(db, upload_id, expiry, None)
        except Exception:  # the next turn tries again; the PATCH does not depend on it
            log.exception("resumable upload %s: its lease was not renewed", upload_id)


async def end_patch(db: async_sessionmaker[AsyncSession], upload_id: int, owner: str) -> None:
    await _set_lease(db, upload_id, ResumableUpload.lease_owner == owner, None, None)


async def _set_lease(
    db: async_sessionmaker[AsyncSession],
    upload_id: int,
    condition: ColumnElement[bool],
    owner: str | None,
    until: datetime | None,
) -> bool:
    async with db() as session:
        result = await session.execute(
            update(ResumableUpload)
            .where(ResumableUpload.id == upload_id, condition)
            .values(lease_owner=owner, lease_expires_at=until)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def wait_for_patch(
    db: async_sessionmaker[AsyncSession], upload_id: int, expiry: float, received: int | None
) -> datetime | None:
    """The upload waits for its next PATCH (``received`` bytes held, if known) until its
    new expiry, which is returned; None if it is not uploading any more."""
    until = utcnow() + timedelta(seconds=expiry)
    async with db() as session:
        if received is None:
            upload = await session.get(TemplateUpload, upload_id)
            received = upload.received_bytes if upload is not None else 0
        waiting = await upload_states.wait_for_patch(session, upload_id, until, received)
        await session.commit()
    return until if waiting else None


async def plan_of(db: async_sessionmaker[AsyncSession], resumable: Resumable) -> UploadPlan:
    """The plan its last byte is recorded with (Conflict/Invalid if no longer possible)."""
    async with db() as session:
        return await plan_of_upload(
            session,
            resumable.upload,
            sync_node_ids=resumable.sync_node_ids,
            auto_sync=resumable.auto_sync,
            rollout=resumable.rollout,
        )
