"""The coordinator's tables.

Names follow the original system (pve_cluster, vm_template, template_upload, ...)
so administrators who know it recognise them. Uniqueness rules that the API
promises are enforced by the database, not only by code:

* a live template name is unique per cluster (``vm_template.name_key`` is the
  name while live and NULL once deleted; NULLs never collide in a unique index);
* one upload per (template, version): each version of a template is its own upload row;
* one instance per (template, version, node);
* one active sync task per (template, version, target node) (``active_key`` likewise);
* one deletion job per template (``template_deletion.template_id``).
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.db.types import UtcDateTime, exact_string, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Leased:
    """A row that is also a durable job: a worker owns it while its lease is fresh."""

    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Unexpected errors of the job's handler in a row, and when the first of them happened:
    # the job fails once its kind's limits are passed (coordinator/jobs/limits.py).
    unexpected_errors: Mapped[int] = mapped_column(Integer, default=0)
    first_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PveCluster(Timestamps, Base):
    __tablename__ = "pve_cluster"

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(100), unique=True)
    api_url: Mapped[str] = mapped_column(String(255))
    token_id: Mapped[str] = mapped_column(String(255))
    token_secret: Mapped[str] = mapped_column(String(255))
    verify_ssl: Mapped[bool] = mapped_column(Boolean, default=True)
    pve_version: Mapped[str] = mapped_column(String(50), default="")
    last_sync_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_sync_error: Mapped[str | None] = mapped_column(Text)
    creator: Mapped[str] = mapped_column(String(100), default="")
    modifier: Mapped[str] = mapped_column(String(100), default="")


class PveNode(Timestamps, Base):
    __tablename__ = "pve_node"
    __table_args__ = (UniqueConstraint("cluster_id", "node_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("pve_cluster.id", ondelete="CASCADE"))
    node_name: Mapped[str] = mapped_column(String(100))
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    # online / offline as PVE reports it; "removed" once the node left the cluster.
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_sync_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PveStorage(Timestamps, Base):
    __tablename__ = "pve_storage"
    __table_args__ = (
        UniqueConstraint("node_id", "storage_name"),
        Index("ix_pve_storage_cluster_name", "cluster_id", "storage_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("pve_cluster.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(ForeignKey("pve_node.id", ondelete="CASCADE"))
    storage_name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(String(255), default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    avail: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sync_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class VmTemplate(Timestamps, Base):
    __tablename__ = "vm_template"
    __table_args__ = (UniqueConstraint("cluster_id", "name_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("pve_cluster.id"), index=True)
    template_name: Mapped[str] = mapped_column(String(128))
    # template_name while the template is live, NULL after deletion (see module doc).
    name_key: Mapped[str | None] = mapped_column(exact_string(128))
    description: Mapped[str] = mapped_column(Text, default="")
    # coordinator/states/template.py (which writes it); deleted_at is set with "deleted".
    status: Mapped[str] = mapped_column(String(16), default="active")
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The version clones and look-ups use by default (contract 6.1): moved by the import of a
    # newer version on its import node (coordinator/states/template.py), or by activate.
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    creator: Mapped[str] = mapped_column(String(100), default="")
    modifier: Mapped[str] = mapped_column(String(100), default="")


class TemplateDeletion(Timestamps, Leased, Base):
    """A cascade delete as a durable job: running while its template is ``deleting``.

    One row per template, reused if a cascade is asked for again after it finished.
    """

    __tablename__ = "template_deletion"
    __table_args__ = (Index("ix_template_deletion_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"), unique=True)
    # coordinator/states/deletion.py: running -> done, or failed when the job gave up
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # What is still to remove (JSON list, coordinator/deletion_plan.py) and why it is not gone yet.
    remaining: Mapped[str] = mapped_column(Text, default="[]")
    reason: Mapped[str | None] = mapped_column(Text)
    creator: Mapped[str] = mapped_column(String(100), default="")


class TemplateUpload(Timestamps, Leased, Base):
    __tablename__ = "template_upload"
    __table_args__ = (
        Index("ix_template_upload_status_next", "status", "next_attempt_at"),
        # What changed lately, for live events (coordinator/events/reader.py); likewise below.
        Index("ix_template_upload_updated_at", "updated_at"),
        UniqueConstraint("template_id", "version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL once a rejected upload's template row is removed (the failed upload stays as a record).
    template_id: Mapped[int | None] = mapped_column(ForeignKey("vm_template.id"), index=True)
    # Which version of its template this upload is (1: the first upload). A rejected upload
    # of a new version keeps its number but loses its template (template_id NULL, as above).
    version: Mapped[int] = mapped_column(Integer, default=1)
    # What this version is (the template's own description is the template's).
    description: Mapped[str] = mapped_column(Text, default="")
    template_name: Mapped[str] = mapped_column(String(128))
    cluster_id: Mapped[int] = mapped_column(Integer, index=True)
    storage_id: Mapped[int] = mapped_column(Integer, index=True)
    storage_name: Mapped[str] = mapped_column(String(100))
    storage_type: Mapped[str] = mapped_column(String(32))
    is_shared: Mapped[bool] = mapped_column(Boolean, default=False)
    import_node_id: Mapped[int] = mapped_column(Integer)
    import_node_name: Mapped[str] = mapped_column(String(100))
    # The client's file name, sanitised; it is only ever a label, never a path.
    file_name: Mapped[str] = mapped_column(String(255))
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # While it streams (coordinator/upload_progress.py): the bytes received so far and the
    # request's length (0 when it came chunked), so that others can watch it (live events).
    received_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    expected_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_format: Mapped[str] = mapped_column(String(16), default="")
    virtual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    # The name the agent chose for the staged file (its staging directory, its namespace).
    staged_name: Mapped[str] = mapped_column(String(128), default="")
    # coordinator/states/upload.py: uploading -> uploaded -> importing -> imported, or failed
    status: Mapped[str] = mapped_column(String(16), default="uploading")
    import_progress: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    vmid: Mapped[int | None] = mapped_column(Integer)
    vm_config: Mapped[str] = mapped_column(Text, default="{}")
    creator: Mapped[str] = mapped_column(String(100), default="")


class ResumableUpload(Timestamps, Base):
    """A resumable (tus) upload's own state beside its template_upload row (same id), which
    stays ``uploading`` between PATCHes: the length declared at creation, the plan's inputs
    that are not on the upload row (rebuilt from them when the last byte arrives), and the
    lease of the one PATCH that may stream at a time (coordinator/resumable.py). The bytes
    themselves are the import node's agent's partial file; how many, only the agent says."""

    __tablename__ = "resumable_upload"

    id: Mapped[int] = mapped_column(ForeignKey("template_upload.id"), primary_key=True)
    upload_length: Mapped[int] = mapped_column(BigInteger)
    sync_node_ids: Mapped[str] = mapped_column(Text, default="[]")
    auto_sync: Mapped[bool] = mapped_column(Boolean, default=False)
    rollout: Mapped[bool] = mapped_column(Boolean, default=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TemplateInstance(Timestamps, Base):
    __tablename__ = "template_instance"
    __table_args__ = (UniqueConstraint("template_id", "version", "node_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"), index=True)
    # The template's version this node's VM holds (each version is its own PVE template VM).
    version: Mapped[int] = mapped_column(Integer, default=1)
    upload_id: Mapped[int] = mapped_column(Integer, index=True)
    cluster_id: Mapped[int] = mapped_column(Integer, index=True)
    node_id: Mapped[int] = mapped_column(Integer, index=True)
    node_name: Mapped[str] = mapped_column(String(100))
    storage_id: Mapped[int] = mapped_column(Integer)
    storage_name: Mapped[str] = mapped_column(String(100))
    is_shared: Mapped[bool] = mapped_column(Boolean, default=False)
    vmid: Mapped[int | None] = mapped_column(Integer)
    volume_id: Mapped[str] = mapped_column(String(255), default="")
    # coordinator/states/instance.py: pending -> syncing -> importing -> available, or failed
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    sync_task_id: Mapped[int | None] = mapped_column(Integer, index=True)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    creator: Mapped[str] = mapped_column(String(100), default="")
    modifier: Mapped[str] = mapped_column(String(100), default="")


def new_task_uid() -> str:
    return secrets.token_hex(16)


class TemplateSyncTask(Timestamps, Leased, Base):
    __tablename__ = "template_sync_task"
    __table_args__ = (
        UniqueConstraint("template_id", "version", "active_key"),
        Index("ix_template_sync_task_status_next", "status", "next_attempt_at"),
        Index("ix_template_sync_task_target_status", "target_node_id", "status"),
        Index("ix_template_sync_task_source_status", "source_node_id", "status"),
        # The API's lists, newest first by filter: a page is read in index order, never sorted.
        Index("ix_template_sync_task_template_status_id", "template_id", "status", "id"),
        Index("ix_template_sync_task_status_id", "status", "id"),
        Index("ix_template_sync_task_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # What agents key their receive of this task by (tickets and calls name it): an id can
    # come back after a delete (SQLite without AUTOINCREMENT), and agents may serve more
    # than one coordinator; 128 random bits collide with neither.
    uid: Mapped[str] = mapped_column(String(32), unique=True, default=new_task_uid)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"), index=True)
    # The version it copies (its upload's).
    version: Mapped[int] = mapped_column(Integer, default=1)
    upload_id: Mapped[int] = mapped_column(Integer, index=True)
    cluster_id: Mapped[int] = mapped_column(Integer)
    source_node_id: Mapped[int] = mapped_column(Integer)
    source_node_name: Mapped[str] = mapped_column(String(100))
    target_node_id: Mapped[int] = mapped_column(Integer)
    target_node_name: Mapped[str] = mapped_column(String(100))
    storage_name: Mapped[str] = mapped_column(String(100))
    # coordinator/states/sync_task.py: pending -> syncing -> importing -> completed, or failed / canceled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # target_node_id while pending/syncing/importing, NULL otherwise (see module doc).
    active_key: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of bytes_done: what crossed the network (re-sent bytes included), and what the target
    # did not need to receive (zeros, chunks of an earlier version it holds).
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_reused: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_bytes_per_sec: Mapped[int] = mapped_column(BigInteger, default=0)
    vmid: Mapped[int | None] = mapped_column(Integer)
    # `attempts` counts every attempt, a manual retry's too; sync_max_attempts counts from here.
    attempts_before_retry: Mapped[int] = mapped_column(Integer, default=0)
    # Counts the task's transfer attempts; tickets name it, so an older attempt's stream is refused.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    # The nodes that may ask for tickets to this target in this attempt: the chain's source and
    # the relays before the target (a sender routing around a dead relay skips ahead), comma-separated.
    upstream_nodes: Mapped[str] = mapped_column(Text, default="")
    # The target's verified copy in its staging (once received); it can serve later syncs.
    staged_name: Mapped[str] = mapped_column(String(128), default="")
    sync_start_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sync_end_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)
    creator: Mapped[str] = mapped_column(String(100), default="")


class Clone(Timestamps, Leased, Base):
    """A VM cloned from a template (issue 13), a durable job while it is pending, waiting for
    its node's sync task or cloning (coordinator/states/clone.py), then the record of where
    the clone came from (template, version).

    ``vmid_key`` is the VMID while the clone is under way and NULL once it ended: the unique
    (cluster, vmid_key) key lets no two clones in flight hold the same VMID, whichever replica
    chose it (a finished clone's VM is in PVE's own list; a failed one's was destroyed).
    """

    __tablename__ = "clones"
    __table_args__ = (
        UniqueConstraint("cluster_id", "vmid_key"),
        Index("ix_clones_status_next", "status", "next_attempt_at"),
        # The API's lists, newest first by filter (a page read in index order).
        Index("ix_clones_template_status_id", "template_id", "status", "id"),
        Index("ix_clones_node_status_id", "node_id", "status", "id"),
        Index("ix_clones_status_id", "status", "id"),
        # Which clones use a version (its delete is refused while a linked one does).
        Index("ix_clones_template_version", "template_id", "version"),
        Index("ix_clones_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"))
    # The template's version cloned (contract 6.1): one a linked clone uses is never deleted.
    version: Mapped[int] = mapped_column(Integer, default=1)
    upload_id: Mapped[int] = mapped_column(Integer)
    cluster_id: Mapped[int] = mapped_column(Integer)
    # Where the clone goes.
    node_id: Mapped[int] = mapped_column(Integer)
    node_name: Mapped[str] = mapped_column(String(100))
    # Whose agent clones: the node itself, or (a shared-storage template) the template VM's node.
    source_node_id: Mapped[int] = mapped_column(Integer)
    source_node_name: Mapped[str] = mapped_column(String(100))
    # The template's VM there (NULL while its sync task has not made it yet).
    source_vmid: Mapped[int | None] = mapped_column(Integer)
    storage_name: Mapped[str] = mapped_column(String(100))
    vmid: Mapped[int | None] = mapped_column(Integer)
    vmid_key: Mapped[int | None] = mapped_column(Integer)
    # The user named the VMID: a clone that finds it taken fails instead of choosing another.
    vmid_given: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(128))
    linked: Mapped[bool] = mapped_column(Boolean, default=False)
    # What was asked: full (NULL: linked where the storage can), target_storage, vm_config (JSON).
    requested_full: Mapped[bool | None] = mapped_column(Boolean)
    target_storage: Mapped[str | None] = mapped_column(String(100))
    vm_config: Mapped[str] = mapped_column(Text, default="{}")
    # The image's size: scales the clone's deadline (a full clone copies the whole disk).
    image_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # pending | waiting_for_sync | cloning | completed | failed (coordinator/states/clone.py)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    sync_task_id: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    creator: Mapped[str] = mapped_column(String(100), default="")


class SyncTaskCount(Base):
    """Sync tasks per template and status, kept by triggers on template_sync_task
    (coordinator/db/sync_task_counts.py): the list's exact total without counting it."""

    __tablename__ = "sync_task_count"
    __table_args__ = (UniqueConstraint("template_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    tasks: Mapped[int] = mapped_column(BigInteger, default=0)


class Agent(Timestamps, Base):
    __tablename__ = "agent"
    __table_args__ = (UniqueConstraint("cluster_name", "node_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(100))
    node_name: Mapped[str] = mapped_column(String(100))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("pve_node.id", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(50), default="")
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set when the agent said goodbye (clean shutdown): not live from that moment.
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pve_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    pve_error: Mapped[str | None] = mapped_column(Text)
    staging_free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class AgentIdentity(Timestamps, Base):
    """A node's agent credential: derived from the coordinator's key, the node name and
    ``generation`` (coordinator/agents/credentials.py), so no per-node secret is stored."""

    __tablename__ = "agent_identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    node_name: Mapped[str] = mapped_column(String(100), unique=True)
    # Bumped by every enrolment: credentials of an earlier one stop working. 0: never enrolled.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    enrolled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # sha256 of the outstanding single-use join token (NULL once used, revoked or never made).
    join_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    join_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # sha256 of the secret: tokens are 256-bit random, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LimitSlot(Base):
    """One of ``limit`` numbered slots of a limit shared by every coordinator replica
    (coordinator/shared_limits.py): the unique (scope, slot) key is what enforces it, and a
    slot whose holder stopped renewing it (a killed coordinator) is free once it expires."""

    __tablename__ = "limit_slot"
    __table_args__ = (UniqueConstraint("scope", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    # The coordinator process (engine.OWNER) and what in it holds the slot.
    owner: Mapped[str] = mapped_column(String(64), index=True)
    holder: Mapped[str] = mapped_column(String(96))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Ids leave the coordinator (API answers, the agents' receive state keyed by task, logs), so
# an id is never given twice, on every table. SQLite hands out max(rowid)+1, reusing the id of
# a deleted last row, unless the table is AUTOINCREMENT (its counter kept in sqlite_sequence).
# MariaDB's InnoDB never reuses them: since 10.2.4 the counter survives a restart too
# (checked on the 10.11.19 the tests run against; MySQL persists it since 8.0).
for _table in Base.metadata.tables.values():
    _table.dialect_options["sqlite"]["autoincrement"] = True
