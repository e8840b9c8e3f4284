"""Coordinator -> agent: a VM's disk, or a volume on a PVE storage, exported into staging, to
become a template (contract 6.3, POST /templates/from-vm; 6.5, POST /templates/from-volume).
POST /v1/exports/check says what would be exported (or why not) without doing it; POST
/v1/exports starts the export, keyed by the upload it is for (its staged file is named as
that upload's: ``upload-<id>-<random>.qcow2``); GET /v1/exports/{upload_id} follows it; POST
/v1/exports/{upload_id}/cancel stops it."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from msgspec import Meta

from shared.error_slugs import ErrorSlug
from shared.messages.uploads import Staged
from shared.validation import CheckedStr, Model
from shared.volume_id import VolumeRefused, parse_volume_id

# qemu-server Drive.pm: the buses a VM disk sits on (efidisk0, tpmstate0 are no system disk)
DISK_KEY = re.compile(r"(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5]))")
# PVE's snapshot names: format pve-configid, at most 40 characters
SNAPSHOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")


class _Matching(CheckedStr):
    """A name matched whole by ``pattern`` (no "$": it matches before a trailing newline)."""

    pattern: ClassVar[re.Pattern[str]]
    rule: ClassVar[str]  # what a valid one is, for the message

    @classmethod
    def check(cls, text: str) -> str:
        if not cls.pattern.fullmatch(text):
            raise ValueError(f"{cls.field} must be {cls.rule} (got {text!r})")
        return text


class DiskKey(_Matching):
    """A VM disk's config key: ideN, sataN, scsiN or virtioN (as PVE's schema names them)."""

    field: ClassVar[str] = "disk"
    pattern = DISK_KEY
    rule = "a VM disk key: ide0-3, sata0-5, scsi0-30 or virtio0-15"
    json_schema = {"type": "string", "pattern": f"^{DISK_KEY.pattern}$"}


class SnapshotName(_Matching):
    """A PVE snapshot name (format pve-configid, at most 40 characters)."""

    field: ClassVar[str] = "snapshot"
    pattern = SNAPSHOT_NAME
    rule = "a PVE snapshot name: a letter, then letters, digits, '_' or '-', 2 to 40 characters"
    json_schema = {"type": "string", "pattern": f"^{SNAPSHOT_NAME.pattern}$"}


class VolumeName(CheckedStr):
    """A PVE volume id a template can be made from (shared/volume_id.py: an import volume or
    a VM disk image), checked with an allowlist."""

    field: ClassVar[str] = "volume"
    json_schema = {
        "type": "string",
        "maxLength": 500,
        "description": "storage:import/<name>.qcow2|raw|vmdk, "
        "or a disk image volume (storage:<vmid>/vm-<vmid>-disk-<n>.<format>, storage:vm-<vmid>-disk-<n>)",
    }

    @classmethod
    def check(cls, text: str) -> str:
        try:
            parse_volume_id(text)
        except VolumeRefused as exc:
            raise ValueError(str(exc)) from None
        return text


class ExportAsk(Model):
    """What to copy: a disk of a VM on the agent's node, at a snapshot (None: as it is now,
    which needs the VM stopped; ``disk`` None: the boot disk); or a volume on a storage the
    node sees (an import volume, or a disk image: its VM must be stopped)."""

    vmid: Annotated[int, Meta(ge=100, le=999999999)] | None = None
    disk: DiskKey | None = None
    snapshot: SnapshotName | None = None
    volume: VolumeName | None = None

    def __post_init__(self) -> None:
        if (self.vmid is None) == (self.volume is None):
            raise ValueError("exactly one of vmid and volume is required")
        if self.volume is not None and (self.disk is not None or self.snapshot is not None):
            raise ValueError("a volume is copied as it is: leave out disk and snapshot")


class ExportRequest(ExportAsk, kw_only=True):
    """The ask, for an upload (whose staged name the copy gets), within the upload's limits.
    (Flat, not nesting the ask: checked fields are checked at the top level only.)"""

    upload_id: Annotated[int, Meta(ge=1)]
    max_virtual_size: Annotated[int, Meta(ge=1)]
    label: Annotated[str, Meta(pattern="^[A-Za-z0-9._+-]{1,200}\\Z")] = "the exported disk"


class ExportSource(Model):
    """What an export reads: the VM, its disk (key, PVE volume, format, virtual size) and the
    snapshot; ``running``: the VM ran when it was looked at. For a volume named as such,
    ``disk`` is None and ``vmid`` the VM owning it (None: an import volume)."""

    vmid: int | None
    vm_name: str
    disk: str | None
    volume: str
    format: str
    size: int
    snapshot: str | None
    running: bool


ExportState = Literal["running", "done", "failed"]


class ExportView(Model):
    """How far an export is. A failed one says why (``error_slug``, ``status``: the HTTP status
    the coordinator answers with); a done one, what was staged."""

    upload_id: int
    state: ExportState
    phase: str
    progress: float
    source: ExportSource
    staged: Staged | None = None
    error: str | None = None
    error_slug: ErrorSlug | None = None
    status: int | None = None


def describe(source: ExportSource) -> str:
    """What is read, for messages: ``scsi0 of VM 100 (local:100/vm-100-disk-0.qcow2)``."""
    if source.disk is None:
        return f"volume {source.volume}"
    return f"{source.disk} of VM {source.vmid} ({source.volume})"
