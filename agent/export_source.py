"""Which file an export reads: the VM on this node, its disk, the disk's path, through PVE;
or a volume named as such (an import volume, a VM's disk image) on a storage this node sees.

Everything here is read-only (GET calls). The disk is one the caller names, or the boot
disk (``boot: order=...``, else the legacy ``bootdisk``, else the first disk in PVE's drive
order); CD-ROMs, cloud-init drives, pass-through devices (a path, not a volume) and disks
whose storage gives no file path are refused, naming why. A snapshot is looked up in PVE's
list, and the disk is taken from the snapshot's own config (it may differ from today's).
``pick_disk`` is pure and unit-tested. A named volume must be listed in its storage's
content of its kind (so the storage exists here, holds that content type and has the
volume); a disk image's VM must be stopped (as a VM's disk export without a snapshot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentFault
from agent.pve import NodePve, PveCallError
from shared.error_slugs import ErrorSlug
from shared.messages.exports import DISK_KEY, ExportAsk, ExportSource
from shared.pve_formats import DRIVE_NAMES, STORAGE_ID_RE
from shared.volume_id import VolumeId, parse_volume_id

# The formats qemu-img is asked to read (always with -f): what validate.py knows.
READABLE_FORMATS = ("raw", "qcow2", "vmdk")
CLOUDINIT = re.compile(r"(?:^|[:/])(?:vm-\d+-)?cloudinit(?:\.\w+)?\Z")
# A volume name as pve-storage prints them: no control characters, no leading '/'.
VOLNAME = re.compile(r"[^\x00-\x1f\x7f/][^\x00-\x1f\x7f]{0,254}")
# An absolute path without control characters (what qemu-img gets as the source).
FILE_PATH = re.compile(r"/[^\x00-\x1f\x7f]{1,4095}")


class ExportRefused(AgentFault):
    """The export cannot be done as asked: ``status`` and ``slug`` for the answer."""

    def __init__(self, status: int, slug: ErrorSlug, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug
        self.message = message


def _disks(config: dict[str, Any]) -> list[str]:
    return [k for k in DRIVE_NAMES if k in config and DISK_KEY.fullmatch(k)]


def _boot_order(config: dict[str, Any]) -> list[str]:
    boot = str(config.get("boot") or "")
    m = re.search(r"(?:^|,)order=([^,]+)", boot)
    if m:
        return [k for k in m.group(1).split(";") if k]
    if config.get("bootdisk"):
        return [str(config["bootdisk"])]
    return []


def _is_media(value: str) -> bool:
    cdrom = re.search(r"(?:^|,)media=cdrom(?:,|\Z)", value)
    return bool(cdrom) or bool(CLOUDINIT.search(value.split(",")[0]))


def pick_disk(config: dict[str, Any], vmid: int, disk: str | None) -> tuple[str, str]:
    """(disk key, volume id) of the disk to export from the VM's ``config``."""
    disks = _disks(config)
    if disk is None:
        candidates = [k for k in _boot_order(config) if k in disks] + disks
        disk = next((k for k in candidates if not _is_media(str(config[k]))), None)
        if disk is None:
            raise ExportRefused(400, ErrorSlug.DISK_NOT_FOUND, f"VM {vmid} has no disk to export")
    elif disk not in disks:
        have = ", ".join(disks) or "none"
        message = f"VM {vmid} has no disk {disk} (its disks: {have})"
        raise ExportRefused(404, ErrorSlug.DISK_NOT_FOUND, message)
    value = str(config[disk])
    if _is_media(value):
        message = f"{disk} of VM {vmid} is a CD-ROM or cloud-init drive, not a disk"
        raise ExportRefused(400, ErrorSlug.DISK_NOT_EXPORTABLE, message)
    volid = value.split(",")[0]
    storage, sep, volname = volid.partition(":")
    if not sep or not STORAGE_ID_RE.fullmatch(storage) or not VOLNAME.fullmatch(volname):
        raise ExportRefused(
            400,
            ErrorSlug.DISK_NOT_EXPORTABLE,
            f"{disk} of VM {vmid} is not a volume on a PVE storage ({volid[:100]!r})",
        )
    return disk, volid


@dataclass(frozen=True)
class Source:
    """What an export reads: the facts for messages, and the file qemu-img opens."""

    view: ExportSource
    path: str
    used: int  # bytes the volume takes (what the copy may need at most, sparse parts aside)
    # Checked as an upload is before qemu-img converts it: an import volume is anyone's file
    # (a backing file, a data file or a VMDK extent could name a host file to copy in).
    untrusted: bool = False


async def _vm_listed(pve: NodePve, vmid: int) -> dict[str, Any]:
    vms = await pve.call("get", f"nodes/{pve.node}/qemu")
    found = next((vm for vm in vms if int(vm.get("vmid", -1)) == vmid), None)
    if found is None:
        raise ExportRefused(404, ErrorSlug.VM_NOT_FOUND, f"VM {vmid} is not on node {pve.node}")
    return dict(found)


async def _snapshot_config(pve: NodePve, vmid: int, snapshot: str) -> dict[str, Any]:
    snaps = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/snapshot")
    names = [str(s.get("name")) for s in snaps if s.get("name") != "current"]
    if snapshot not in names:
        have = ", ".join(names) or "none"
        message = f"VM {vmid} has no snapshot {snapshot!r} (its snapshots: {have})"
        raise ExportRefused(404, ErrorSlug.SNAPSHOT_NOT_FOUND, message)
    config: dict[str, Any] = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/config", snapshot=snapshot)
    return config


async def is_running(pve: NodePve, vmid: int) -> bool:
    status = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/status/current")
    return str(status.get("status")) != "stopped"


async def not_stopped(pve: NodePve, vmid: int) -> dict[str, Any] | None:
    """VM ``vmid``'s entry in the cluster's resources (its node, status, name) unless it is
    stopped or gone: a disk on a shared storage may belong to a VM on another node, and one on
    a node that is down has status ``unknown``, which is not stopped either."""
    resources = await pve.call("get", "cluster/resources", type="vm")
    found = next((r for r in resources if int(r.get("vmid", -1)) == vmid), None)
    return None if found is None or found.get("status") == "stopped" else dict(found)


async def locate(pve: NodePve, ask: ExportAsk) -> Source:
    """The disk ``ask`` names, checked; ExportRefused naming what is wrong."""
    try:
        return await _locate(pve, ask)
    except PveCallError as exc:
        raise ExportRefused(502, ErrorSlug.PVE_ERROR, f"PVE on {pve.node}: {exc}") from None


async def _locate(pve: NodePve, ask: ExportAsk) -> Source:
    if ask.volume is not None:
        return await _locate_volume(pve, parse_volume_id(ask.volume))
    vmid = ask.vmid
    assert vmid is not None  # (ExportAsk: a vmid or a volume)
    listed = await _vm_listed(pve, vmid)
    name = str(listed.get("name") or f"VM {vmid}")
    running = await is_running(pve, vmid)
    if ask.snapshot is None:
        if running:
            raise ExportRefused(
                409,
                ErrorSlug.VM_RUNNING,
                f"VM {vmid} ({name}) on {pve.node} is running: stop it, or name a snapshot to export",
            )
        config: dict[str, Any] = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/config")
    else:
        config = await _snapshot_config(pve, vmid, ask.snapshot)
    disk, volid = pick_disk(config, vmid, ask.disk)
    what = f"{disk} of VM {vmid} ({volid})"
    path, fmt, size, used = await _volume_file(pve, volid, what)
    if ask.snapshot is not None and fmt != "qcow2":
        raise ExportRefused(
            400,
            ErrorSlug.DISK_NOT_EXPORTABLE,
            f"{disk} of VM {vmid} is {fmt} on storage {volid.partition(':')[0]}: a snapshot can be "
            "exported from qcow2 disks only (their snapshots are inside the file)",
        )
    view = ExportSource(
        vmid=vmid,
        vm_name=name,
        disk=disk,
        volume=volid,
        format=fmt,
        size=size,
        snapshot=ask.snapshot,
        running=running,
    )
    return Source(view, path, used)


async def _volume_file(pve: NodePve, volid: str, what: str) -> tuple[str, str, int, int]:
    """PVE's path, format, virtual size and bytes used of ``volid`` (``what`` names it in
    refusals): a file qemu-img can read in a format it is told."""
    storage = volid.partition(":")[0]
    info = await pve.call("get", f"nodes/{pve.node}/storage/{storage}/content/{volid}")
    path, fmt = str(info.get("path") or ""), str(info.get("format") or "")
    if not FILE_PATH.fullmatch(path):
        raise ExportRefused(
            400,
            ErrorSlug.DISK_NOT_EXPORTABLE,
            f"{what} has no file path on this node (storage {storage} gives "
            f"{path[:100]!r}): exporting from it is not supported",
        )
    if fmt not in READABLE_FORMATS:
        message = f"{what} is {fmt!r}, not raw, qcow2 or vmdk"
        raise ExportRefused(400, ErrorSlug.DISK_NOT_EXPORTABLE, message)
    size = int(info.get("size") or 0)
    return path, fmt, size, int(info.get("used") or size)


async def _locate_volume(pve: NodePve, volume: VolumeId) -> Source:
    """The volume, listed by PVE in its storage's content of its kind on this node."""
    storages = await pve.call("get", f"nodes/{pve.node}/storage", enabled=1)
    found = next((s for s in storages if str(s.get("storage")) == volume.storage), None)
    if found is None:
        message = f"node {pve.node} has no enabled storage {volume.storage!r}"
        raise ExportRefused(404, ErrorSlug.VOLUME_NOT_FOUND, message)
    content = str(found.get("content") or "")
    if volume.kind not in content.split(","):
        message = (
            f"storage {volume.storage} holds no {volume.kind} content (its content: {content or 'none'})"
        )
        raise ExportRefused(400, ErrorSlug.DISK_NOT_EXPORTABLE, message)
    listed = await pve.call("get", f"nodes/{pve.node}/storage/{volume.storage}/content", content=volume.kind)
    if volume.volid not in {str(item.get("volid")) for item in listed}:
        message = f"storage {volume.storage} on {pve.node} has no {volume.kind} volume {volume.volname!r}"
        raise ExportRefused(404, ErrorSlug.VOLUME_NOT_FOUND, message)
    if volume.owner is not None and (vm := await not_stopped(pve, volume.owner)) is not None:
        raise ExportRefused(
            409,
            ErrorSlug.VM_RUNNING,
            f"VM {volume.owner} ({vm.get('name') or 'no name'}) on {vm.get('node')}, whose disk "
            f"{volume.volid} is, is {vm.get('status')}, not stopped: stop it first (or export a "
            "snapshot with from-vm)",
        )
    path, fmt, size, used = await _volume_file(pve, volume.volid, f"volume {volume.volid}")
    view = ExportSource(
        vmid=volume.owner,
        vm_name=volume.volname.rpartition("/")[2],
        disk=None,
        volume=volume.volid,
        format=fmt,
        size=size,
        snapshot=None,
        running=False,
    )
    return Source(view, path, used, untrusted=volume.kind == "import")
