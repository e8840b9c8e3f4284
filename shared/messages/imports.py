"""Coordinator -> agent: a staged image imported as a VM template (POST /v1/imports, GET
/v1/imports/{key}, POST /v1/imports/{key}/cancel); every answer is the import's view."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from shared.error_slugs import ImportErrorKind
from shared.staged_names import StagedName
from shared.text_fields import Description, StorageId, VmName
from shared.validation import Model
from shared.vm_config import VmConfig, check_volumes


class ImportRequest(Model):
    """What the coordinator asks for. Every string ends up on pvesh's command line, so each
    is checked by the agent again (it trusts nothing): names anchored (a regex's $ matches
    before a trailing newline, hence \\Z), no control characters, options from the allowlist."""

    key: Annotated[str, Meta(pattern="^t[0-9]+-[us][0-9]+\\Z")]
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
    staged_name: StagedName
    storage: StorageId
    name: VmName
    description: Description = Description("")
    options: VmConfig = VmConfig()
    # The image's size in bytes (the larger of file and virtual size): scales the deadline.
    image_size: Annotated[int, Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        check_volumes(self.options, self.storage)


class CancelRequest(Model):
    reason: Annotated[str, Meta(min_length=1, max_length=200)]


ImportState = Literal["running", "done", "failed"]


class ImportView(Model):
    """How far an import is; ``error_kind`` says what the coordinator does about a failure."""

    key: str
    vmid: int
    state: ImportState
    phase: str
    progress: float
    error: str | None = None
    error_kind: ImportErrorKind | None = None
    volume_id: str | None = None
