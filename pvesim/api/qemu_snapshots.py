"""VM snapshots (qemu-server API2/Qemu.pm snapshot_list, snapshot; PVE::AbstractConfig
snapshot_create / snapshot_delete).

A snapshot is a ``[name]`` section of the VM's config (the config as it was, with
``snaptime``; the VM's ``parent`` names the newest) plus a snapshot of every disk that is
not a CD-ROM. Which disks can have one is the storage plugin's ``snapshot`` feature: on
dir/NFS storage only qcow2 (an internal snapshot, ``qemu-img snapshot -c``, Plugin.pm
volume_snapshot). The emulator's block storages (LVM-thin, ZFS, RBD) keep plain files and
do not model their snapshots: there the feature is missing, and PVE's own refusal is given.
A snapshot of a running VM saves no RAM state here (``vmstate`` is refused).
"""

from __future__ import annotations

import time
from typing import Any

from pvesim import disks
from pvesim.api import Request, as_bool, route
from pvesim.errors import die
from pvesim.state import Cluster
from pvesim.storage import parse_volume_id
from pvesim.tasks import TaskContext
from pvesim.vmconfig import VmConfig, drive_is_cdrom

# __snapshot_copy_config: keys a snapshot section does not copy from the VM's config
NOT_COPIED = frozenset({"snapshots", "pending", "parent", "snaptime", "vmstate", "snapstate", "lock"})
LOCK_WAIT = 10


def _snapshot_volumes(cluster: Cluster, conf: VmConfig) -> list[tuple[str, str]]:
    """(volid, path) of every disk a snapshot covers; dies like has_feature('snapshot')
    when one of them cannot have a snapshot."""
    found = []
    for _key, drive in conf.drives():
        if drive_is_cdrom(drive):  # (cloud-init drives too: they are made anew)
            continue
        volid = str(drive.get("file") or "")
        if not parse_volume_id(volid):
            raise die("snapshot feature is not available")
        storage, volname = cluster.volume(volid)
        vol = storage.parse_volname(volname)
        if not storage.has_path or storage.type not in ("dir", "nfs") or vol.format != "qcow2":
            raise die("snapshot feature is not available")
        found.append((volid, volname))
    return found


@route("GET", "/nodes/{node}/qemu/{vmid}/snapshot")
async def snapshot_list(req: Request, params: dict[str, str]) -> Any:
    node, vmid = params["node"], int(params["vmid"])
    req.check(f"/vms/{vmid}", ["VM.Audit"])
    conf = req.cluster.load_vm(node, vmid)
    res: list[dict[str, Any]] = []
    for name, snap in conf.snapshots.items():
        item: dict[str, Any] = {"name": name, "description": snap.get("description", "")}
        if snap.get("parent"):
            item["parent"] = snap["parent"]
        if snap.get("snaptime"):
            item["snaptime"] = int(snap["snaptime"])
        if snap.get("vmstate"):
            item["vmstate"] = 1
        res.append(item)
    current: dict[str, Any] = {
        "name": "current",
        "digest": conf.digest,
        "running": 1 if req.cluster.is_running(node, vmid) else 0,
        "description": "You are here!",
    }
    if conf.get("parent"):
        current["parent"] = conf.get("parent")
    res.append(current)
    return res


@route("POST", "/nodes/{node}/qemu/{vmid}/snapshot")
async def snapshot_create(req: Request, params: dict[str, str]) -> Any:
    cluster, node, vmid = req.cluster, params["node"], int(params["vmid"])
    snapname = params["snapname"]
    req.check(f"/vms/{vmid}", ["VM.Snapshot"])
    if snapname == "current":
        raise die(f"unable to use snapshot name '{snapname}' (reserved name)")
    if snapname.lower() == "pending":
        raise die(f"unable to use snapshot name '{snapname}' (reserved name)")
    cluster.load_vm(node, vmid)
    if as_bool(params.get("vmstate")):
        raise die("saving the VM state (vmstate) is not emulated")

    def prepare() -> list[tuple[str, str]]:
        conf = cluster.load_vm(node, vmid)
        if conf.lock:
            raise die(f"VM is locked ({conf.lock})")
        if conf.is_template:
            raise die("you can't take a snapshot if it's a template")
        if snapname in conf.snapshots:
            raise die(f"snapshot name '{snapname}' already used")
        volumes = _snapshot_volumes(cluster, conf)
        snap = {k: v for k, v in conf.values.items() if k not in NOT_COPIED}
        snap.update(snapstate="prepare", snaptime=str(int(time.time())))
        if conf.get("parent"):
            snap["parent"] = conf.get("parent") or ""
        snap["description"] = params.get("description") or ""
        if not snap["description"]:
            del snap["description"]
        conf.snapshots[snapname] = snap
        conf.values["lock"] = "snapshot"
        cluster.write_vm(node, vmid, conf)
        return volumes

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, LOCK_WAIT):
            volumes = prepare()
        for volid, volname in volumes:
            storage, _ = cluster.volume(volid)
            path = storage.path(node, volname)
            cmd = [disks.QEMU_IMG, "snapshot", "-c", snapname, str(path)]
            code, _out, err = await disks.run(cmd, ctx.log)
            if code != 0:
                raise die(f"qemu-img snapshot -c {snapname} {path} failed: {err.strip()}")
        async with cluster.lock_vm(vmid, LOCK_WAIT):
            conf = cluster.load_vm(node, vmid)
            if conf.lock != "snapshot":
                raise die("missing snapshot lock")
            snap = conf.snapshots.get(snapname)
            if snap is None:
                raise die(f"snapshot '{snapname}' does not exist")
            snap.pop("snapstate", None)
            del conf.values["lock"]
            conf.values["parent"] = snapname
            cluster.write_vm(node, vmid, conf)

    return req.fork_worker(node, "qmsnapshot", str(vmid), worker)


@route("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}")
async def snapshot_delete(req: Request, params: dict[str, str]) -> Any:
    cluster, node, vmid = req.cluster, params["node"], int(params["vmid"])
    snapname = params["snapname"]
    req.check(f"/vms/{vmid}", ["VM.Snapshot"])

    def loaded() -> VmConfig:
        conf = cluster.load_vm(node, vmid)
        if snapname not in conf.snapshots:
            raise die(f"snapshot '{snapname}' does not exist")
        return conf

    loaded()

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, LOCK_WAIT):
            conf = loaded()
            if conf.lock and not as_bool(params.get("force")):
                raise die(f"VM is locked ({conf.lock})")
            snap = VmConfig(conf.snapshots[snapname])
            for _key, drive in snap.drives():
                volid = str(drive.get("file") or "")
                if drive_is_cdrom(drive) or not parse_volume_id(volid):
                    continue
                storage, volname = cluster.volume(volid)
                path = storage.path(node, volname)
                await disks.run([disks.QEMU_IMG, "snapshot", "-d", snapname, str(path)], ctx.log)
            parent = conf.snapshots[snapname].get("parent")
            del conf.snapshots[snapname]
            # the deleted snapshot's children (and the VM itself) now descend from its parent
            for other in [conf.values, *conf.snapshots.values()]:
                if other.get("parent") == snapname:
                    if parent:
                        other["parent"] = parent
                    else:
                        other.pop("parent", None)
            cluster.write_vm(node, vmid, conf)

    return req.fork_worker(node, "qmdelsnapshot", str(vmid), worker)
