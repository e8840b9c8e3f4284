"""A received image made a staged one: validated (agent/validate.py), renamed from its part
file to its staged name, and its chunk manifest started. The one way an image enters
staging, whether it was uploaded (agent/routes/uploads.py) or downloaded (agent/downloader.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.staging import Staging
from agent.transfer.manifests import StagedManifests
from agent.validate import inspect
from shared.messages.uploads import Staged

log = logging.getLogger(__name__)


async def stage_if_valid(
    staging: Staging,
    manifests: StagedManifests,
    upload_id: int,
    fmt: str,
    max_virtual: int,
    label: str,
    name: str,
    part: Path,
    sha256: str,
) -> Staged:
    """Validate the received ``part``: a valid image becomes staged image ``name``; a rejected
    one is removed (ImageRejected, as validate.inspect raises it)."""
    try:
        info = await inspect(part, fmt, max_virtual, label)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    size = part.stat().st_size
    os.rename(part, staging.path(name))
    staging.fsync_dir()
    # Its chunk manifest is built now, beside the import (a rollout waited ~1.7 s for it at
    # 512 MiB under load): agent/transfer/manifests.py ``prepare``.
    manifests.prepare(name)
    log.info(
        "upload %s staged as %s: %d bytes, %s, virtual size %d, sha256 %s",
        upload_id,
        name,
        size,
        fmt,
        info.virtual_size,
        sha256,
    )
    return Staged(staged_name=name, size=size, sha256=sha256, format=fmt, virtual_size=info.virtual_size)
