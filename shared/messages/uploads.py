"""Coordinator -> agent: an image streamed into staging (PUT /v1/uploads/{id}, the body is
the image, the parameters are in the query), what staging holds (GET /v1/staging), and
removing what is staged (DELETE /v1/uploads/{id}, DELETE /v1/staging/{name})."""

from __future__ import annotations

from shared.validation import Model


class Staged(Model):
    """What the agent stored for an upload (hashed while writing, then validated)."""

    staged_name: str
    size: int
    sha256: str
    format: str
    virtual_size: int


class UploadRemoved(Model):
    upload_id: int
    removed: list[str]  # the files an upload left (its partial file, its staged image)


class StagedRemoved(Model):
    staged_name: str
    removed: bool


class StagedUpload(Model):
    upload_id: int
    age_seconds: float  # an age, not a time: the coordinator's clock may differ


class StagedReceive(Model):
    task_id: int
    task_uid: str
    age_seconds: float


class StagingReport(Model):
    uploads: list[StagedUpload]
    receives: list[StagedReceive]


class ResumableHeld(Model):
    """What the agent holds of a resumable upload (PUT/GET /v1/resumable/{id}): its offset."""

    upload_id: int
    offset: int


class ResumablePatched(Model):
    """A PATCH /v1/resumable/{id} written: the new offset, and once the last byte is in and
    the image is valid, the staged image."""

    upload_id: int
    offset: int
    staged: Staged | None = None
