"""An upload's states (template_upload.status) and every write of one.

::

    uploading --the image is stored and valid on the import node-->   uploaded (import queued)
    uploading --no valid image came of it (refused, broke off)-->     failed
    uploaded  --the import job starts-->                              importing
    importing --the import node has the template-->                   imported
    uploaded/importing --the import failed for good, or its template is deleted--> failed
    imported/failed --its version is deleted (DELETE .../versions/{v}, keep_versions)--> deleting
    deleting  --every VM and image of the version removed-->          deleted

An upload is a version of its template (template_upload.version): a version's status is
its upload's. While ``deleting`` nothing new starts on the version (no clone, no sync); the
deletion holds the row's lease while it removes parts (coordinator/version_delete.py).

While it streams, the upload's row is leased to the coordinator receiving it; then the
import job's runner leases it. A write is conditional on the status it leaves, so a job
that lost the race (a cascade delete failed the upload meanwhile) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateUpload
from coordinator.db.types import utcnow
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class UploadStatus(StrEnum):
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    IMPORTING = "importing"
    IMPORTED = "imported"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


S = UploadStatus
# The import job's: queued or running.
IMPORT_QUEUE = (S.UPLOADED, S.IMPORTING)
# An upload in these is over: what `wait=true` waits for.
FINAL = (S.IMPORTED, S.FAILED)
# Versions that exist for the API (listed, counted by keep_versions).
LISTED = (S.UPLOADING, S.UPLOADED, S.IMPORTING, S.IMPORTED, S.FAILED, S.DELETING)
TRANSITIONS = Transitions[UploadStatus](
    {
        S.UPLOADING: frozenset({S.UPLOADED, S.FAILED}),
        S.UPLOADED: frozenset({S.IMPORTING, S.FAILED}),
        S.IMPORTING: frozenset({S.IMPORTED, S.FAILED}),
        S.IMPORTED: frozenset({S.DELETING}),
        S.FAILED: frozenset({S.DELETING}),
        S.DELETING: frozenset({S.DELETED}),
    }
)


def new_upload(lease_owner: str, lease: float, **fields: Any) -> TemplateUpload:
    """An upload about to stream, leased to ``lease_owner`` for ``lease`` seconds; the caller adds it."""
    return TemplateUpload(
        status=S.UPLOADING,
        lease_owner=lease_owner,
        lease_expires_at=utcnow() + timedelta(seconds=lease),
        **fields,
    )


async def _move(
    session: AsyncSession,
    upload_id: int,
    new: UploadStatus,
    *,
    from_: tuple[UploadStatus, ...] | None = None,
    **values: Any,
) -> bool:
    return (
        await move(
            session, TemplateUpload, TRANSITIONS, new, [TemplateUpload.id == upload_id], from_, **values
        )
        == 1
    )


async def abandon(session: AsyncSession, upload_id: int, reason: str) -> bool:
    """uploading -> failed: no valid staged image came of it; the record no longer points at
    its template (the caller removes that row) and its streaming lease ends."""
    return await _move(
        session,
        upload_id,
        S.FAILED,
        from_=(S.UPLOADING,),
        error_message=reason,
        template_id=None,
        lease_owner=None,
        lease_expires_at=None,
    )


async def wait_for_patch(session: AsyncSession, upload_id: int, until: datetime, received: int) -> bool:
    """A resumable upload stays uploading between its PATCHes, ``received`` bytes held: its
    row's lease is nobody's, and runs out at ``until`` (its expiry: then the janitor gives
    it up, coordinator/uploads.expire_abandoned). False: it is not uploading any more."""
    result = await session.execute(
        update(TemplateUpload)
        .where(TemplateUpload.id == upload_id, TemplateUpload.status == S.UPLOADING)
        .values(lease_owner=None, lease_expires_at=until, received_bytes=received)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def stored(
    session: AsyncSession, upload_id: int, *, staged_name: str, size: int, sha256: str, virtual_size: int
) -> bool:
    """uploading -> uploaded: the import node's agent holds the image, valid; the import is queued."""
    return await _move(
        session,
        upload_id,
        S.UPLOADED,
        staged_name=staged_name,
        file_size=size,
        sha256=sha256,
        virtual_size=virtual_size,
        lease_owner=None,
        lease_expires_at=None,
    )


async def start_import(session: AsyncSession, upload_id: int) -> bool:
    """uploaded -> importing (the import job took it)."""
    return await _move(session, upload_id, S.IMPORTING, import_progress=0)


async def imported(session: AsyncSession, upload_id: int, vmid: int) -> bool:
    """importing -> imported as VM ``vmid``."""
    return await _move(
        session,
        upload_id,
        S.IMPORTED,
        import_progress=100,
        vmid=vmid,
        error_message=None,
        next_attempt_at=None,
    )


async def fail_import(session: AsyncSession, upload_id: int, reason: str) -> bool:
    """uploaded/importing -> failed: the import failed for good."""
    return await _move(
        session, upload_id, S.FAILED, from_=IMPORT_QUEUE, error_message=reason, next_attempt_at=None
    )


async def stop_imports_of_template(session: AsyncSession, template_id: int, reason: str) -> int:
    """uploaded/importing -> failed for every upload of a template being deleted (its import
    job sees it and stops)."""
    return await move(
        session,
        TemplateUpload,
        TRANSITIONS,
        S.FAILED,
        [TemplateUpload.template_id == template_id],
        IMPORT_QUEUE,
        error_message=reason,
        next_attempt_at=None,
    )


async def start_deleting(session: AsyncSession, upload_id: int) -> bool:
    """imported/failed -> deleting: its version is being removed; of concurrent deletes
    (requests, replicas' pruners) exactly one moves it."""
    return await _move(session, upload_id, S.DELETING)


async def version_deleted(session: AsyncSession, upload_id: int) -> bool:
    """deleting -> deleted: the version's VMs and images are gone (the row stays: its number
    is never given again)."""
    return await _move(session, upload_id, S.DELETED, staged_name="", lease_owner=None, lease_expires_at=None)
