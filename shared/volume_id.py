"""A PVE volume id named by a client (``storage:volname``), parsed with an allowlist before
anything is asked of PVE (pure).

Only the two kinds a template can be made from pass: an ``import`` content volume
(``import/<name>.qcow2|raw|vmdk``, PVE's SAFE_CHAR_CLASS names, pve-storage Plugin.pm) and a
disk image, as a dir storage names it (``<vmid>/vm-<vmid>-disk-0.qcow2``, a linked clone's
``<basevmid>/base-.../<vmid>/vm-...``) or a block storage does (``vm-<vmid>-disk-0``). Other
content types (iso, vztmpl, backup, snippets) are refused by name; anything else (``..``, an
absolute path, control characters, ``,`` or ``=`` options, whitespace) does not match. The
path is never built from this text: the agent asks PVE for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.errors import PvesphereError
from shared.pve_formats import STORAGE_ID_RE

# pve-storage's SAFE_CHAR_CLASS_RE without '=' (it starts a drive option in a VM config)
_SAFE = r"[A-Za-z0-9][A-Za-z0-9+._-]{0,199}"
_VMID = r"[1-9][0-9]{2,8}"
_IMPORT = re.compile(rf"import/({_SAFE}\.(qcow2|raw|vmdk))")
# (vm|base)-<vmid>-<name>[.fmt] on a dir storage, under its owner's directory
_DIR_DISK = rf"(?:vm|base)-({_VMID})-{_SAFE}\.(?:qcow2|raw|vmdk)"
_DIR_IMAGE = re.compile(rf"(?:{_VMID}/(?:base|vm)-{_VMID}-{_SAFE}/)?({_VMID})/{_DIR_DISK}")
_BLOCK_IMAGE = re.compile(rf"(?:base-{_VMID}-{_SAFE}/)?(?:vm|base)-({_VMID})-{_SAFE}")
# pve-storage's other content types, by the subdirectory their volume names start with
_OTHER = {"iso": "iso", "vztmpl": "vztmpl", "backup": "backup", "snippets": "snippets"}
MAX_LENGTH = 500

VolumeKind = Literal["import", "images"]


class VolumeRefused(PvesphereError, ValueError):
    """Not a volume a template can be made from; the message says why."""


@dataclass(frozen=True)
class VolumeId:
    storage: str
    volname: str
    kind: VolumeKind
    owner: int | None  # the VM a disk image belongs to (None: an import volume)

    @property
    def volid(self) -> str:
        return f"{self.storage}:{self.volname}"


def parse_volume_id(text: str) -> VolumeId:
    """``text`` as an importable volume id, or VolumeRefused."""
    if len(text) > MAX_LENGTH:
        raise VolumeRefused(f"volume must be at most {MAX_LENGTH} characters")
    storage, sep, volname = text.partition(":")
    if not sep or not STORAGE_ID_RE.fullmatch(storage):
        raise VolumeRefused(f"volume must be a PVE volume id 'storage:name' (got {text[:100]!r})")
    if ".." in volname:
        raise VolumeRefused(f"volume must not contain '..' (got {text[:100]!r})")
    if _IMPORT.fullmatch(volname):
        return VolumeId(storage, volname, "import", None)
    for pattern in (_DIR_IMAGE, _BLOCK_IMAGE):
        if m := pattern.fullmatch(volname):
            return VolumeId(storage, volname, "images", int(m.group(1)))
    kind = _OTHER.get(volname.partition("/")[0])
    if kind is not None:
        raise VolumeRefused(
            f"volume {text[:100]!r} has content type {kind}: a template is made from an import volume "
            "(import/<name>.qcow2, .raw or .vmdk) or a VM disk image"
        )
    raise VolumeRefused(
        f"volume must be an import volume (storage:import/<name>.qcow2, .raw or .vmdk) or a VM disk "
        f"image (storage:<vmid>/vm-<vmid>-disk-<n>.<format>, storage:vm-<vmid>-disk-<n>) (got {text[:100]!r})"
    )
