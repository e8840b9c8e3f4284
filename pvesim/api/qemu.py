"""VM endpoints (qemu-server API2/Qemu.pm): list, config, status, create (with disk
allocation and import), template, destroy and clone."""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pvesim import disks, hostinfo
from pvesim.api import Request, as_bool, route
from pvesim.disks import LogFn
from pvesim.errors import ApiError, die, param_error, perm_error
from pvesim.state import Cluster
from pvesim.storage import Storage, parse_volume_id
from pvesim.tasks import TaskContext
from pvesim.vmconfig import (
    CREATE_ONLY_PARAMS,
    NEW_DISK_RE,
    VmConfig,
    drive_is_cdrom,
    drive_is_cloudinit,
    is_drive,
    normalize_value,
    parse_drive,
    print_drive,
    with_mac,
)
from shared import ssh_keys
from shared.pve_formats import DRIVE_NAMES, parse_size, split_list

# pve-storage Storage.pm, the line check_volume_access dies on (no trailing newline in the
# source, so Perl appends the location)
ROOT_ONLY_PATHS = (
    "Only root can pass arbitrary filesystem paths. at /usr/share/perl5/PVE/Storage.pm line 651.\n"
)
CLOUDINIT_DISK_SIZE = 4 * 1024 * 1024
TPMSTATE_DISK_SIZE = 4 * 1024 * 1024
QEMU_VERSION_FALLBACK = "9.2.0"


# ---------------------------------------------------------------------------------------------
# status


def bootdisk_size(conf: VmConfig) -> int | None:
    """Drive.pm bootdisk_size: size of the first boot-order disk."""
    boot = conf.get("boot")
    if boot and not re.fullmatch(r"[acdn]{1,4}", boot):
        m = re.search(r"(?:^|,)order=([^,]+)", boot)
        order = split_list(m.group(1)) if m else []
    elif conf.get("bootdisk"):
        order = [conf.get("bootdisk") or ""]
    else:
        order = []
    for key in order:
        if not is_drive(key) or not conf.get(key):
            continue
        drive = parse_drive(key, conf.values[key])
        if drive_is_cdrom(drive) or not drive.get("file"):
            continue
        return parse_size(str(drive.get("size", "0"))) or 0
    return None


def vm_status(cluster: Cluster, vmid: int, conf: VmConfig, full: bool = False) -> dict[str, Any]:
    """QemuServer::vmstatus for a VM (a started VM runs nothing: it is a pid file,
    pvesim/api/qemu_power.py)."""
    node = cluster.vmlist.get(vmid)
    running = node is not None and cluster.is_running(node, vmid)
    d: dict[str, Any] = {"vmid": vmid, "status": "running" if running else "stopped"}
    size = bootdisk_size(conf)
    d["disk"] = 0
    d["maxdisk"] = size or 0
    cpus = int(conf.get("sockets") or 1) * int(conf.get("cores") or 1)
    cpus = min(cpus, hostinfo.cpu_count())
    if conf.get("vcpus"):
        cpus = int(conf.get("vcpus") or 1)
    d["cpus"] = cpus
    d["name"] = conf.get("name") or f"VM {vmid}"
    memory = conf.get("memory") or "512"
    m = re.search(r"(?:^|,)(?:current=)?(\d+)", memory)
    d["maxmem"] = int(m.group(1) if m else 512) * 1024 * 1024
    if conf.get("balloon"):
        d["balloon_min"] = int(conf.get("balloon") or 0) * 1024 * 1024
        d["shares"] = int(conf.get("shares") or 1000)
    d.update(uptime=0, cpu=0, mem=0, memhost=0, netout=0, netin=0)
    if conf.is_template:
        d["template"] = 1
    if any(conf.get(f"serial{i}") for i in range(4)):
        d["serial"] = 1
    if conf.lock:
        d["lock"] = conf.lock
    if conf.get("tags") is not None:
        d["tags"] = conf.get("tags")
    if full:
        d["qmpstatus"] = d["status"]
    return d


def node_vms(cluster: Cluster, node: str) -> list[int]:
    return sorted(vmid for vmid, n in cluster.vmlist.items() if n == node)


@route("GET", "/nodes/{node}/qemu")
async def vmlist(req: Request, params: dict[str, str]) -> Any:
    res = []
    for vmid in node_vms(req.cluster, params["node"]):
        if not req.can(f"/vms/{vmid}", ["VM.Audit"]):
            continue
        try:
            conf = req.cluster.load_vm(params["node"], vmid)
        except ApiError:
            continue
        res.append(vm_status(req.cluster, vmid, conf, as_bool(params.get("full"))))
    return res


@route("GET", "/nodes/{node}/qemu/{vmid}")
async def vmdiridx(req: Request, params: dict[str, str]) -> Any:
    req.cluster.load_vm(params["node"], int(params["vmid"]))
    return [
        {"subdir": s}
        for s in (
            "config",
            "pending",
            "status",
            "unlink",
            "vncproxy",
            "termproxy",
            "migrate",
            "resize",
            "move",
            "rrd",
            "rrddata",
            "monitor",
            "agent",
            "snapshot",
            "spiceproxy",
            "sendkey",
            "firewall",
            "mtunnel",
            "remote_migrate",
        )
    ]


@route("GET", "/nodes/{node}/qemu/{vmid}/config")
async def vm_config(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/vms/{params['vmid']}", ["VM.Audit"])
    conf = req.cluster.load_vm(params["node"], int(params["vmid"]))
    snapname = params.get("snapshot")
    if snapname:
        snap = conf.snapshots.get(snapname)
        if snap is None:
            raise die(f"snapshot '{snapname}' does not exist")
        return VmConfig(dict(snap)).api_view()
    return conf.api_view()


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
async def vm_status_current(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/vms/{params['vmid']}", ["VM.Audit"])
    vmid = int(params["vmid"])
    conf = req.cluster.load_vm(params["node"], vmid)
    status = vm_status(req.cluster, vmid, conf, full=True)
    status["ha"] = {"managed": 0}
    agent = conf.get("agent")
    if agent and re.match(r"(enabled=)?(1|on|yes|true)\b", agent):
        status["agent"] = 1
    return status


# ---------------------------------------------------------------------------------------------
# access checks (pve-storage check_volume_access, qemu-server check_storage_access)


def check_volume_access(req: Request, vmid: int, volid: str, vtype: str | None = None) -> None:
    parsed = parse_volume_id(volid)
    if parsed is None:
        if not req.principal.is_root_pam:
            raise die(ROOT_ONLY_PATHS)
        return
    storage, volname = req.cluster.volume(volid)
    vol = storage.parse_volname(volname)
    if vtype is not None and vol.vtype != vtype and not (vtype == "rootdir" and vol.vtype == "images"):
        raise die(f"unable to use volume {volid} - content type needs to be '{vtype}'")
    req.check(f"/storage/{storage.storeid}", ["Datastore.Allocate"])


def check_storage_access(
    req: Request, vmid: int, settings: dict[str, str], default_storage: str | None
) -> None:
    for key in sorted(settings):
        if not is_drive(key):
            continue
        drive = parse_drive(key, settings[key])
        volid = drive.get("file") or ""
        parsed = parse_volume_id(volid)
        is_cdrom = drive_is_cdrom(drive)
        if not volid or volid in ("none", "cloudinit") or (parsed and parsed[1] == "cloudinit"):
            pass
        elif is_cdrom and volid == "cdrom":
            req.check("/", ["Sys.Console"])
        elif not is_cdrom and NEW_DISK_RE.match(volid):
            m = NEW_DISK_RE.match(volid)
            assert m
            storeid = m.group(2) or default_storage
            if not storeid:
                raise die("no storage ID specified (and no default storage)")
            req.check(f"/storage/{storeid}", ["Datastore.AllocateSpace"])
            storage = req.cluster.storage(storeid)
            if "images" not in storage.content:
                raise param_error({"storage": f"storage '{storeid}' does not support vm images"})
        else:
            check_volume_access(req, vmid, volid)
            if parsed:
                storage, volname = req.cluster.volume(volid)
                vtype = storage.parse_volname(volname).vtype
                if vtype not in ("images", "iso"):
                    raise param_error({key: "content type needs to be 'images' or 'iso'"})
        source = drive.get("import-from")
        if source:
            src = parse_volume_id(source)
            src_vmid = None
            if src:
                storage, volname = req.cluster.volume(source)
                vol = storage.parse_volname(volname)
                if vol.vtype not in ("images", "import"):
                    raise param_error(
                        {key: f"{source} has wrong type '{vol.vtype}' - needs to be 'images' or 'import'"}
                    )
                if vol.format.startswith("ova+"):
                    raise die(f"cannot import from '{source}' - OVA extraction is not emulated")
                src_vmid = vol.vmid
            if src_vmid:
                req.check(f"/vms/{src_vmid}", ["VM.Clone"])
            else:
                check_volume_access(req, vmid, source)


def check_drive_param(settings: dict[str, str]) -> None:
    for key in sorted(settings):
        if not is_drive(key):
            continue
        drive = parse_drive(key, settings[key])
        if drive.get("import-from"):
            m = NEW_DISK_RE.match(drive.get("file") or "")
            if not m or float(m.group(3)) != 0:
                raise param_error(
                    {key: "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"}
                )
            if key == "efidisk0":
                for required in ("efitype", "pre-enrolled-keys"):
                    if drive.get(required) is None:
                        raise param_error({key: f"need to specify '{required}' when using 'import-from'"})
            elif key == "tpmstate0" and drive.get("version") is None:
                raise param_error({key: "need to specify 'version' when using 'import-from'"})


# ---------------------------------------------------------------------------------------------
# disk creation


@dataclass
class DiskJob:
    req: Request
    node: str
    vmid: int
    log: LogFn
    vollist: list[str] = field(default_factory=list)

    @property
    def cluster(self) -> Cluster:
        return self.req.cluster

    async def alloc(self, storage: Storage, fmt: str, name: str | None, size_kib: int) -> str:
        storage.check_enabled(self.node)
        volname = await storage.alloc(self.node, self.vmid, fmt, name, size_kib, self.log)
        volid = storage.volid(volname)
        self.vollist.append(volid)
        return volid

    async def free(self, volid: str) -> None:
        storage, volname = self.cluster.volume(volid)
        await storage.free(self.node, volname, self.log)

    async def create_base(self, volid: str) -> str:
        storage, volname = self.cluster.volume(volid)
        newvol = storage.volid(await storage.create_base(self.node, volname, self.log))
        self.vollist = [newvol if v == volid else v for v in self.vollist]
        return newvol

    async def convert(
        self, src: str, src_format: str | None, dst_volid: str, size: int, rate: int | None
    ) -> None:
        """QemuImage::convert into an allocated volume, failing like qemu-img when the
        storage has no room for the data."""
        storage, volname = self.cluster.volume(dst_volid)
        dst = storage.path(self.node, volname)
        dst_format = storage.parse_volname(volname).format
        needed = os.stat(src).st_blocks * 512
        _total, avail, _used = storage.status(self.node)
        if needed > avail:
            cmd = [disks.QEMU_IMG, "convert", "-p", "-n"]
            cmd += ["-f", src_format] if src_format else []
            cmd += ["-O", dst_format, src, str(dst)]
            self.log(f"transferred {disks.render_bytes(0, 1)} of {disks.render_bytes(size, 1)} (0.00%)")
            self.log(f"qemu-img: error while writing at byte {avail - avail % 512}: No space left on device")
            raise die(f"copy failed: command '{disks.cmd_string(cmd)}' failed: exit code 1")
        limit = rate or self.cluster.import_rate_limit
        await disks.convert(src, src_format, str(dst), dst_format, size, self.log, limit)

    async def import_path(self, key: str, source: str, storeid: str, fmt: str | None) -> tuple[str, int]:
        """create_disks for an absolute path: file_size_info (untrusted) + ImportDisk::do_import."""
        if not (os.path.isfile(source) or Path(source).is_block_device()):
            raise die(f"can't find file '{source}'")
        source = os.path.realpath(source)
        info = await disks.file_size_info(source, None, untrusted=True)
        if not info.size:
            raise die(f"could not get file size of {source}")
        storage = self.cluster.storage(storeid)
        dst_format = storage.resolve_format_hint(fmt)
        if fmt and fmt != dst_format:
            self.log(f"format '{fmt}' is not supported by the target storage - using '{dst_format}' instead")
        volid = await self.alloc(storage, dst_format, None, -(-info.size // 1024))
        try:
            await self.convert(source, disks.src_format_from_path(source), volid, info.size, None)
        except BaseException:
            if not self.req.tasks.stopping:
                self.vollist.remove(volid)
                try:
                    await self.free(volid)
                except ApiError as err:
                    self.log(f"cleanup of {volid} failed: {err.message.rstrip()}")
            raise
        return volid, info.size

    async def import_volume(self, key: str, source: str, storeid: str, fmt: str | None) -> tuple[str, int]:
        """create_disks for a storage volume: $import_from_volid + clone_disk (full)."""
        src_storage, src_volname = self.cluster.volume(source)
        vol = src_storage.parse_volname(src_volname)
        src_path = str(src_storage.path(self.node, src_volname))
        try:
            src_info = await src_storage.size_info(self.node, src_volname)
        except (ApiError, OSError):
            raise die(f"could not get size of {source}") from None
        drivename = None
        if vol.vmid is not None and vol.vmid in self.cluster.vmlist:
            owner_node = self.cluster.vmlist[vol.vmid]
            if owner_node != self.node:
                raise die(f"owner VM {vol.vmid} not on local node")
            owner_conf = self.cluster.load_vm(owner_node, vol.vmid)
            for dkey, drive in owner_conf.drives():
                if drive.get("file") == source:
                    drivename = dkey
                    break
        self.log(f"create full clone of drive {drivename + ' ' if drivename else ''}({source})")
        storage = self.cluster.storage(storeid)
        dst_format = storage.resolve_format_hint(fmt or vol.format)
        if fmt and fmt != dst_format:
            self.log(
                f"format '{fmt}' is not supported by the target storage '{storeid}' - using"
                f" '{dst_format}' instead"
            )
        volid = await self.alloc(storage, dst_format, None, -(-src_info.size // 1024))
        self.log(f"allocated target volume '{volid}'")
        await self.convert(src_path, vol.format, volid, src_info.size, None)
        new_storage, new_volname = self.cluster.volume(volid)
        size = (await new_storage.size_info(self.node, new_volname)).size
        return volid, size


async def create_disks(
    job: DiskJob,
    settings: dict[str, str],
    default_storage: str | None,
    is_template: bool,
) -> dict[str, str]:
    """API2/Qemu.pm create_disks: allocate or import every drive; returns the new values."""
    res: dict[str, str] = {}
    try:
        for key in sorted(settings):
            if not is_drive(key):
                continue
            disk = parse_drive(key, settings[key])
            volid = disk.get("file") or ""
            parsed = parse_volume_id(volid)
            if not volid or volid in ("none", "cdrom"):
                disk.pop("size", None)
                res[key] = print_drive(key, disk)
            elif parsed and parsed[1] == "cloudinit" or volid == "cloudinit":
                storeid = parsed[0] if parsed else default_storage
                if not storeid:
                    raise die("no storage ID specified (and no default storage)")
                attached = next((k for k, v in res.items() if drive_is_cloudinit(parse_drive(k, v))), None)
                if attached:
                    raise die(f"{key} - cloud-init drive is already attached at '{attached}'")
                storage = job.cluster.storage(storeid)
                name = f"vm-{job.vmid}-cloudinit"
                fmt = disk.get("format") or ("qcow2" if storage.has_path else "raw")
                if storage.has_path:
                    name += f".{fmt}"
                disk["file"] = await job.alloc(storage, fmt, name, CLOUDINIT_DISK_SIZE // 1024)
                disk["media"] = "cdrom"
                disk.pop("format", None)
                res[key] = print_drive(key, disk)
                job.log(f"{key}: successfully created disk '{res[key]}'")
            elif m := NEW_DISK_RE.match(volid):
                storeid = m.group(2) or default_storage
                if not storeid:
                    raise die("no storage ID specified (and no default storage)")
                # PVE::Tools::convert_size rounds a fractional KiB up
                size_kib = math.ceil(float(m.group(3)) * 1024 * 1024)
                source = disk.pop("import-from", None)
                if source:
                    if parse_volume_id(source):
                        src_storage, src_volname = job.cluster.volume(source)
                        src_vol = src_storage.parse_volname(src_volname)
                        if src_vol.vtype == "import":
                            # an uploaded image is untrusted (backing files, data files ...)
                            await disks.file_size_info(
                                str(src_storage.path(job.node, src_volname)),
                                src_vol.format,
                                untrusted=True,
                            )
                        try:
                            dst, size = await job.import_volume(key, source, storeid, disk.get("format"))
                        except ApiError as exc:
                            raise die(f"cannot import from '{source}' - {exc.message}") from None
                    else:
                        dst, size = await job.import_path(key, source, storeid, disk.get("format"))
                        if is_template:
                            dst = await job.create_base(dst)
                    disk["file"] = dst
                    disk["size"] = size
                else:
                    storage = job.cluster.storage(storeid)
                    fmt = disk.get("format") or storage.default_format()
                    if key == "tpmstate0":
                        size_kib = TPMSTATE_DISK_SIZE // 1024
                    elif key == "efidisk0":
                        # size of the OVMF_VARS image for the chosen layout
                        size_kib = 528 if disk.get("efitype") == "4m" else 128
                    new = await job.alloc(storage, fmt, None, size_kib)
                    if is_template:
                        new = await job.create_base(new)
                    disk["file"] = new
                    disk["size"] = size_kib * 1024
                disk.pop("format", None)
                res[key] = print_drive(key, disk)
                job.log(f"{key}: successfully created disk '{res[key]}'")
            else:
                check_volume_access(job.req, job.vmid, volid)
                if parsed:
                    storage, volname = job.cluster.volume(volid)
                    vol = storage.parse_volname(volname)
                    if vol.vtype not in ("images", "iso"):
                        raise die(f"cannot use volume {volid} - content type needs to be 'images' or 'iso'")
                    if disk.get("format") and disk["format"] != vol.format:
                        raise die(
                            f"drive '{key}' - volume '{volid}' - 'format={disk['format']}' option"
                            f" different from storage format '{vol.format}'"
                        )
                    try:
                        size = (await storage.size_info(job.node, volname)).size
                    except OSError:
                        size = 0
                else:
                    size = os.path.getsize(volid) if os.path.exists(volid) else 0
                if not size:
                    raise die(f"volume {volid} does not exist")
                disk["size"] = size
                res[key] = print_drive(key, disk)
    except BaseException:
        if job.req.tasks.stopping:
            raise  # the emulator goes down mid-task: leave things as a crash would
        for volid in job.vollist:
            try:
                await job.free(volid)
            except Exception as exc:  # noqa: BLE001 - PVE only warns here
                job.log(str(exc).rstrip())
        job.vollist.clear()
        raise
    return res


def _default_boot(values: dict[str, str]) -> str | None:
    devs = []
    for cdrom in (False, True):
        for key in DRIVE_NAMES:
            if key in ("efidisk0", "tpmstate0") or key not in values:
                continue
            if drive_is_cdrom(parse_drive(key, values[key])) == cdrom:
                devs.append(key)
                break
    for i in range(32):
        if f"net{i}" in values:
            devs.append(f"net{i}")
            break
    return f"order={';'.join(devs)}" if devs else None


def qemu_version() -> str:
    """`creation-qemu` of the meta property: the version of the qemu tools in use."""
    try:
        out = os.popen(f"{disks.QEMU_IMG} --version").read()
    except OSError:
        return QEMU_VERSION_FALLBACK
    m = re.search(r"version (\d+\.\d+\.\d+)", out)
    return m.group(1) if m else QEMU_VERSION_FALLBACK


_QEMU_VERSION: str | None = None


@route("POST", "/nodes/{node}/qemu")
async def create_vm(req: Request, params: dict[str, str]) -> Any:
    global _QEMU_VERSION
    cluster = req.cluster
    node = params["node"]
    vmid = int(params["vmid"])
    settings = {k: v for k, v in params.items() if k not in CREATE_ONLY_PARAMS}
    if settings.get("sshkeys") is not None and ssh_keys.invalid_lines(unquote(settings["sshkeys"])):
        raise die("SSH public key validation error")
    storage = params.get("storage")
    pool = params.get("pool")
    if params.get("archive"):
        raise die(f"unable to restore VM {vmid} - restoring backups is not emulated by pvesim")
    cluster.check_quorum()
    if pool is not None:
        raise die(f"pool '{pool}' does not exist")
    if storage is not None:
        req.check(f"/storage/{storage}", ["Datastore.AllocateSpace"])
    if not req.can(f"/vms/{vmid}", ["VM.Allocate"]):
        raise perm_error()  # create_vm's raise_perm_exc() names neither path nor privilege
    if settings:
        if settings.get("cdrom"):
            value = settings.pop("cdrom")
            settings["ide2"] = value if "media=" in value else value + ",media=cdrom"
        check_storage_access(req, vmid, settings, storage)
        check_drive_param(settings)
        for key in [k for k in settings if re.fullmatch(r"net\d+", k)]:
            settings[key] = with_mac(key, settings[key], _random_mac())
    emsg = f"unable to create VM {vmid} -"
    try:
        async with cluster.lock_vm(vmid, 5):
            cluster.check_vmid_unused(vmid)
            cluster.write_vm(node, vmid, VmConfig({"lock": "create"}))
    except ApiError as exc:
        raise die(f"{emsg} {exc.message}") from None
    if _QEMU_VERSION is None:
        _QEMU_VERSION = qemu_version()
    is_template = as_bool(settings.get("template"))
    start_after = as_bool(params.get("start"))
    ha_managed = as_bool(params.get("ha-managed"))

    async def worker(ctx: TaskContext) -> None:
        try:
            async with cluster.lock_vm(vmid, 1):
                job = DiskJob(req, node, vmid, ctx.log)
                try:
                    created = await create_disks(job, settings, storage, is_template)
                    values = {k: normalize_value(k, v) for k, v in settings.items()}
                    values.update(created)
                    values["meta"] = f"creation-qemu={_QEMU_VERSION},ctime={int(time.time())}"
                    if not values.get("boot"):
                        boot = _default_boot(values)
                        if boot:
                            values["boot"] = boot
                    if not values.get("smbios1"):
                        values["smbios1"] = f"uuid={uuid.uuid4()}"
                    if values.get("vmgenid") in (None, "1") and values.get("arch") != "aarch64":
                        values["vmgenid"] = str(uuid.uuid4())
                    if values.get("tags") is not None:
                        values["tags"] = ";".join(sorted(set(split_list(values["tags"]))))
                    cluster.write_vm(node, vmid, VmConfig(values))
                except ApiError as exc:
                    for volid in job.vollist:
                        try:
                            await job.free(volid)
                        except ApiError as err:
                            ctx.log(err.message.rstrip())
                    raise die(f"{emsg} {exc.message}") from None
        except BaseException:
            if not req.tasks.stopping:
                cluster.destroy_vm_config(node, vmid)
            raise
        if ha_managed:
            ctx.log("Add as HA resource")
            ctx.warn("HA is not emulated by pvesim")
        if start_after:
            ctx.log("Execute autostart")
            ctx.warn(f"VM {vmid} not started - pvesim does not run VMs")

    return req.fork_worker(node, "qmcreate", str(vmid), worker)


# ---------------------------------------------------------------------------------------------
# template, destroy, clone


@route("POST", "/nodes/{node}/qemu/{vmid}/template")
async def template(req: Request, params: dict[str, str]) -> Any:
    cluster = req.cluster
    node = params["node"]
    vmid = int(params["vmid"])
    disk_only = params.get("disk")
    req.check(f"/vms/{vmid}", ["VM.Allocate"])

    def load_and_check() -> VmConfig:
        conf = cluster.load_vm(node, vmid)
        if conf.lock:
            raise die(f"VM is locked ({conf.lock})")
        if conf.is_template and not disk_only:
            raise die("you can't convert a template to a template")
        if cluster.is_running(node, vmid) and not disk_only:
            raise die("you can't convert a VM to template if VM is running")
        return conf

    load_and_check()

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, 10):
            conf = load_and_check()
            conf.values["template"] = "1"
            cluster.write_vm(node, vmid, conf)
            for key, drive in conf.drives():
                if drive_is_cdrom(drive) or (disk_only and key != disk_only):
                    continue
                volid = drive.get("file") or ""
                parsed = parse_volume_id(volid)
                if not parsed:
                    continue
                storage, volname = cluster.volume(volid)
                if not storage.volume_has_feature("template", volname):
                    continue  # template_create: e.g. LVM (thick) keeps its volume as it is
                drive["file"] = storage.volid(await storage.create_base(node, volname, ctx.log))
                conf.values[key] = print_drive(key, drive)
                # written after every disk, in case a later one fails
                cluster.write_vm(node, vmid, conf)

    return req.fork_worker(node, "qmtemplate", str(vmid), worker)


def _skiplock(req: Request, params: dict[str, str]) -> bool:
    """Whether the call skips the VM's lock (only root@pam may)."""
    skiplock = as_bool(params.get("skiplock"))
    if skiplock and not req.principal.is_root_pam:
        raise param_error({"skiplock": "Only root may use this option."})
    return skiplock


@route("DELETE", "/nodes/{node}/qemu/{vmid}")
async def destroy_vm(req: Request, params: dict[str, str]) -> Any:
    cluster = req.cluster
    node = params["node"]
    vmid = int(params["vmid"])
    skiplock = _skiplock(req, params)
    req.check(f"/vms/{vmid}", ["VM.Allocate"])

    def early_checks() -> VmConfig:
        conf = cluster.load_vm(node, vmid)
        if as_bool(conf.get("protection")):
            raise die(f"can't remove VM {vmid} - protection mode enabled")
        if cluster.is_running(node, vmid):
            raise die(f"VM {vmid} is running - destroy failed")
        return conf

    early_checks()

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, 10):
            conf = early_checks()
            if not skiplock and conf.lock and conf.lock != "suspended":
                raise die(f"VM is locked ({conf.lock})")
            if conf.is_template:
                await _refuse_base_in_use(cluster, node, conf)
            owned: list[str] = []
            for _key, drive in conf.drives():
                if drive_is_cdrom(drive, exclude_cloudinit=True):
                    continue
                owned.append(drive.get("file") or "")
            owned += [volid for _k, volid in conf.unused()]
            seen: set[str] = set()
            for volid in owned:
                if not volid or volid.startswith("/") or volid in seen:
                    continue
                parsed = parse_volume_id(volid)
                if not parsed:
                    continue
                seen.add(volid)
                try:
                    storage, volname = cluster.volume(volid)
                    vol = storage.parse_volname(volname)
                except ApiError as exc:
                    ctx.warn(f"failed to get path and owner of volume '{volid}': {exc.message}")
                    continue
                if vol.vmid != vmid:
                    continue
                try:
                    from pvesim.api.storage import vdisk_free

                    await vdisk_free(req, node, volid, ctx.log)
                except ApiError as exc:
                    ctx.warn(f"Could not remove disk '{volid}', check manually: {exc.message}")
            if as_bool(params.get("destroy-unreferenced-disks")):
                for storage in cluster.storages.values():
                    if storage.disabled or not storage.available_on(node):
                        continue
                    for item in await storage.list_images(node, vmid):
                        try:
                            from pvesim.api.storage import vdisk_free

                            await vdisk_free(req, node, item["volid"], ctx.log)
                        except ApiError as exc:
                            ctx.warn(exc.message)
            cluster.write_vm(node, vmid, VmConfig({"lock": "destroyed"}))
            if as_bool(params.get("purge")):
                ctx.log(f"purging VM {vmid} from related configurations..")
            cluster.destroy_vm_config(node, vmid)

    return req.fork_worker(node, "qmdestroy", str(vmid), worker)


async def _refuse_base_in_use(cluster: Cluster, node: str, conf: VmConfig) -> None:
    """QemuServer::destroy_vm: a template whose base volume a linked clone still uses is not
    destroyed (where the clone's volume name tells: not on LVM-thin, see pvesim/storage.py)."""
    from pvesim.api.storage import volume_is_base_and_used

    volids = [d.get("file") or "" for _k, d in conf.drives() if not drive_is_cdrom(d)]
    for volid in volids + [v for _k, v in conf.unused()]:
        if not parse_volume_id(volid):
            continue
        if await volume_is_base_and_used(cluster, node, volid):
            raise die(f"base volume '{volid}' is still in use by linked cloned")


def _random_mac() -> str:
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02X}" for b in raw)


@route("POST", "/nodes/{node}/qemu/{vmid}/clone")
async def clone_vm(req: Request, params: dict[str, str]) -> Any:
    cluster = req.cluster
    node = params["node"]
    vmid = int(params["vmid"])
    newid = int(params["newid"])
    storage_id = params.get("storage")
    fmt = params.get("format")
    target = params.get("target")
    if target in (node, "localhost"):
        target = None

    def load_and_check() -> tuple[VmConfig, dict[str, str], dict[str, dict[str, Any]], set[str]]:
        if params.get("pool") is not None:
            raise die(f"pool '{params['pool']}' does not exist")
        if target and target not in cluster.nodes:
            raise die(f"no such cluster node '{target}'")
        if storage_id:
            st = cluster.storage(storage_id)
            st.check_enabled(node)
            if "images" not in st.content:
                raise param_error({"storage": f"storage '{storage_id}' does not support vm images"})
            if target:
                st.check_enabled(target)
                if not st.shared:
                    raise die(f"can't clone to non-shared storage '{storage_id}'")
        cluster.check_quorum()
        conf = cluster.load_vm(node, vmid)
        if conf.lock:
            raise die(f"VM is locked ({conf.lock})")
        if params.get("snapname"):
            raise die(f"snapshot '{params['snapname']}' does not exist")
        full = as_bool(params["full"]) if "full" in params else not conf.is_template
        if storage_id and not full:
            raise die("parameter 'storage' not allowed for linked clones")
        if fmt and not full:
            raise die("parameter 'format' not allowed for linked clones")
        shared = True
        newconf: dict[str, str] = {"lock": "clone"}
        drives: dict[str, dict[str, Any]] = {}
        fullclone: set[str] = set()
        for key in sorted(conf.values):
            value = conf.values[key]
            if key in ("parent", "snaptime", "vmstate", "snapstate", "runningcpu"):
                continue
            if key in ("runningmachine", "running-nets-host-mtu") or key.startswith("unused"):
                continue
            if re.fullmatch(r"net\d+", key):
                value = re.sub(
                    r"(^|,)((?:virtio|e1000|e1000e|rtl8139|vmxnet3|[a-z0-9\-]+)=)[0-9A-Fa-f:]{17}",
                    lambda mm: mm.group(1) + mm.group(2) + _random_mac(),
                    value,
                )
                value = re.sub(r"macaddr=[0-9A-Fa-f:]{17}", f"macaddr={_random_mac()}", value)
                newconf[key] = value
            elif is_drive(key):
                drive = parse_drive(key, value)
                if drive_is_cdrom(drive, exclude_cloudinit=True):
                    newconf[key] = value
                    continue
                volid = drive.get("file") or ""
                st, volname = cluster.volume(volid)
                if not st.shared:
                    shared = False
                if full or drive_is_cloudinit(drive) or key == "tpmstate0":
                    if not st.volume_has_feature("copy", volname):
                        raise die(f"Full clone feature is not supported for '{volid}' ({key})")
                    fullclone.add(key)  # even a linked clone gets its own copy of these
                elif not st.volume_has_feature("clone", volname):
                    raise die(f"Linked clone feature is not supported for '{volid}' ({key})")
                drives[key] = drive
            else:
                newconf[key] = value
        if target and not shared:
            raise die(f"can't clone VM to node '{target}' (VM uses local storage)")
        if newid in cluster.vmlist:
            raise die(f"unable to create VM {newid}: config file already exists")
        return conf, newconf, drives, fullclone

    load_and_check()

    async def worker(ctx: TaskContext) -> None:
        # a stopped source needs only a shared lock: clones of one template run side by side
        async with cluster.lock_vm_shared(vmid, 1), cluster.lock_vm(newid, 1):
            conf, newconf, drives, fullclone = load_and_check()
            ctx.log(f"creating a clone of VM {vmid} with ID {newid}")
            smbios = re.sub(r"(^|,)uuid=[^,]*", "", newconf.get("smbios1", "")).strip(",")
            newconf["smbios1"] = f"uuid={uuid.uuid4()}" + (f",{smbios}" if smbios else "")
            if newconf.get("vmgenid"):
                newconf["vmgenid"] = str(uuid.uuid4())
            newconf.pop("template", None)
            newconf["name"] = params.get("name") or f"Copy-of-VM-{conf.get('name') or vmid}"
            if params.get("description"):
                newconf["description"] = params["description"]
            cluster.write_vm(node, newid, VmConfig({"lock": "clone"}))
            job = DiskJob(req, node, newid, ctx.log)
            try:
                for key in sorted(drives):
                    drive = dict(drives[key])
                    new = await _clone_disk(job, key, drive, key in fullclone, storage_id, fmt, params)
                    newconf[key] = print_drive(key, new)
                    cluster.write_vm(node, newid, VmConfig(dict(newconf)))
                newconf.pop("lock", None)
                cluster.write_vm(node, newid, VmConfig(newconf))
                if target:
                    cluster.destroy_vm_config(node, newid)
                    cluster.write_vm(target, newid, VmConfig(newconf))
            except BaseException as exc:
                for volid in job.vollist:
                    try:
                        await job.free(volid)
                    except ApiError as err:
                        ctx.log(err.message.rstrip())
                cluster.destroy_vm_config(node, newid)
                if isinstance(exc, ApiError):
                    raise die(f"clone failed: {exc.message}") from None
                raise

    return req.fork_worker(node, "qmclone", str(vmid), worker)


async def _clone_disk(
    job: DiskJob,
    key: str,
    drive: dict[str, Any],
    full: bool,
    storage_id: str | None,
    fmt: str | None,
    params: dict[str, str],
) -> dict[str, Any]:
    """QemuServer::clone_disk for a stopped VM (full copy or linked clone of a base)."""
    src_volid = drive["file"]
    src_storage, src_volname = job.cluster.volume(src_volid)
    src_vol = src_storage.parse_volname(src_volname)
    job.log(f"create {'full' if full else 'linked'} clone of drive {key} ({src_volid})")
    if not full:
        newvol = await _linked_clone(job, src_storage, src_volname)
    else:
        storage = job.cluster.storage(storage_id or src_storage.storeid)
        dst_format = storage.resolve_format_hint(fmt or src_vol.format)
        if fmt and fmt != dst_format:
            job.log(
                f"format '{fmt}' is not supported by the target storage '{storage.storeid}' -"
                f" using '{dst_format}' instead"
            )
        if drive_is_cloudinit(drive):
            # a new, empty cloud-init volume: PVE regenerates its content at start
            name = f"vm-{job.vmid}-cloudinit" + (f".{dst_format}" if storage.has_path else "")
            newvol = await job.alloc(storage, dst_format, name, CLOUDINIT_DISK_SIZE // 1024)
            job.log(f"allocated target volume '{newvol}'")
        else:
            size = (await src_storage.size_info(job.node, src_volname)).size
            newvol = await job.alloc(storage, dst_format, None, -(-size // 1024))
            job.log(f"allocated target volume '{newvol}'")
            src_path = str(src_storage.path(job.node, src_volname))
            rate = int(params["bwlimit"]) * 1024 if params.get("bwlimit") else None
            await job.convert(src_path, src_vol.format, newvol, size, rate)
    new_storage, new_volname = job.cluster.volume(newvol)
    new = dict(drive)
    new.pop("format", None)
    new["file"] = newvol
    new["size"] = (await new_storage.size_info(job.node, new_volname)).size
    return new


async def _linked_clone(job: DiskJob, storage: Storage, volname: str) -> str:
    """PVE::Storage::vdisk_clone of a base volume (the storage plugin's clone_image)."""
    newvol = storage.volid(await storage.clone_image(job.node, volname, job.vmid, job.log))
    job.vollist.append(newvol)
    return newvol


# ---------------------------------------------------------------------------------------------
# config update


# parameters of PUT /nodes/{node}/qemu/{vmid}/config that are not VM configuration keys
UPDATE_ONLY_PARAMS = frozenset({"node", "vmid", "delete", "revert", "digest", "skiplock", "force"})


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
async def update_vm_config(req: Request, params: dict[str, str]) -> Any:
    """API2/Qemu.pm update_vm_api, synchronous, for a stopped VM (the emulator runs none):
    pending changes are applied at once, as PVE does for a VM that is not running."""
    cluster = req.cluster
    node = params["node"]
    vmid = int(params["vmid"])
    skiplock = _skiplock(req, params)
    req.check(f"/vms/{vmid}", ["VM.Config.Options"])
    deletes = split_list(params.get("delete") or "")
    reverts = split_list(params.get("revert") or "")
    settings = {k: v for k, v in params.items() if k not in UPDATE_ONLY_PARAMS}
    for key in deletes:
        if key in settings:
            raise param_error({"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})
        if key in reverts:
            both = f"you can't use '-delete {key}' and -revert {key}' at the same time"
            raise param_error({"revert": both})
    if not settings and not deletes and not reverts:
        raise param_error({"": "no options specified"})
    if settings.get("sshkeys") is not None and ssh_keys.invalid_lines(unquote(settings["sshkeys"])):
        raise die("SSH public key validation error")
    check_storage_access(req, vmid, settings, None)
    check_drive_param(settings)
    for key in [k for k in settings if re.fullmatch(r"net\d+", k)]:
        settings[key] = with_mac(key, settings[key], _random_mac())
    async with cluster.lock_vm(vmid, 10):
        conf = cluster.load_vm(node, vmid)
        if params.get("digest") and params["digest"] != conf.digest:
            raise die("detected modified configuration - file changed by other user? Try again.")
        if not skiplock and conf.lock:
            raise die(f"VM is locked ({conf.lock})")
        job = DiskJob(req, node, vmid, lambda _line: None)
        for key in deletes:
            if key not in conf.values:
                continue  # PVE warns "cannot delete '...' - not set in current configuration!"
            if is_drive(key):
                await _detach_drive(job, conf, key)
            conf.values.pop(key)
        drives = {k: v for k, v in settings.items() if is_drive(k)}
        for key, value in drives.items():
            if drive_is_cloudinit(parse_drive(key, value)):
                attached = next((k for k, d in conf.drives() if k != key and drive_is_cloudinit(d)), None)
                if attached:
                    raise die(f"{key} - cloud-init drive is already attached at '{attached}'")
        created = await create_disks(job, drives, None, conf.is_template)
        for key, value in created.items():
            if key in conf.values:
                await _detach_drive(job, conf, key)
            conf.values[key] = value
        for key, value in settings.items():
            if is_drive(key):
                continue
            conf.values[key] = normalize_value(key, value)
            if key == "tags":
                conf.values[key] = ";".join(sorted(set(split_list(value))))
        cluster.write_vm(node, vmid, conf)
    return None


async def _detach_drive(job: DiskJob, conf: VmConfig, key: str) -> None:
    """A drive replaced or deleted: a cloud-init volume is freed (PVE regenerates it), a
    disk of this VM becomes unusedN (vmconfig_register_unused_drive); a CD-ROM just goes."""
    drive = parse_drive(key, conf.values[key])
    volid = drive.get("file") or ""
    if drive_is_cloudinit(drive):
        await job.free(volid)
    elif not drive_is_cdrom(drive) and parse_volume_id(volid):
        if volid not in {v for _k, v in conf.unused()}:
            free = next(i for i in range(256) if f"unused{i}" not in conf.values)
            conf.values[f"unused{free}"] = volid
