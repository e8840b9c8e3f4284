"""Storage types (dir, nfs, lvmthin, lvm, rbd, zfspool): volume names, paths, allocation,
capacity, and which volumes can be cloned how.

Every storage keeps real files: a `dir`/`nfs` storage is a directory tree laid out as PVE's
(images/<vmid>/vm-<vmid>-disk-<n>.<fmt>, import/, template/iso/ ...); `lvmthin`, `lvm`,
`rbd` and `zfspool` volumes are raw files named like the logical volume / RBD image / zvol.
Local storages have one directory per node, shared ones (nfs, rbd) one for the whole cluster.

What a volume supports (``volume_has_feature``) is each pve-storage plugin's table, for a
volume without a snapshot (the emulator has none), in pve-storage src/PVE/Storage/:
Plugin.pm (dir, nfs: linked clones of raw, qcow2 and vmdk base volumes, as qcow2 overlays),
LvmThinPlugin.pm, RBDPlugin.pm and ZFSPoolPlugin.pm (linked clones of base volumes, templates
of current ones), LVMPlugin.pm (thick: copies only; its template and clone features are
commented out, so a VM there becomes a template without a base volume, and is full-cloned).
A linked clone's volume name says which base it uses on dir/nfs (``9000/base-9000-disk-0.raw/
101/vm-101-disk-0.qcow2``), rbd and zfspool (``base-9000-disk-0/vm-101-disk-0``), never on
lvmthin (LvmThinPlugin.pm: "not tracking this relationship in their volume IDs"): PVE refuses
to free a base volume in use only where the name tells (Storage.pm volume_is_base_and_used).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pvesim import disks
from pvesim.disks import LogFn
from pvesim.errors import die

TiB = 1 << 40
SHARED_TYPES = ("nfs", "rbd", "cephfs", "cifs", "iscsi", "iscsidirect", "pbs", "glusterfs")
# pve-storage Plugin.pm get_subdir
VTYPE_SUBDIRS = {
    "images": "images",
    "rootdir": "private",
    "iso": "template/iso",
    "vztmpl": "template/cache",
    "backup": "dump",
    "snippets": "snippets",
    "import": "import",
}
ISO_EXT_RE = r"\.(?:iso|img)"
VZTMPL_EXT_RE = r"\.(tar(?!\.)|tar\.(?:gz|xz|zst|bz2))"
IMPORT_EXT_RE = r"\.(ova|ovf|qcow2|raw|vmdk)"
SAFE_CHARS = r"[a-zA-Z0-9\-.+=_]"
# 4 MiB: LVM's default extent size, thin volumes are rounded up to it
LVM_EXTENT = 4 << 20
MAX_VOLUMES_PER_GUEST = 1024


@dataclass
class VolName:
    vtype: str
    name: str
    vmid: int | None
    basename: str | None
    basevmid: int | None
    is_base: bool
    format: str


def parse_volume_id(volid: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", volid, re.I | re.S)
    return (m.group(1), m.group(2)) if m else None


def allocated_bytes(path: Path) -> int:
    """Bytes a file tree really occupies (thin provisioning aware)."""
    total = 0
    if path.is_file():
        return path.stat().st_blocks * 512
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Storage:
    """A storage definition plus the operations PVE's plugin for its type offers."""

    type: ClassVar[str] = ""
    valid_content: ClassVar[frozenset[str]] = frozenset()
    formats: ClassVar[tuple[frozenset[str], str]] = (frozenset({"raw"}), "raw")

    def __init__(self, storeid: str, cfg: dict[str, Any], state_dir: Path) -> None:
        self.storeid = storeid
        self.cfg = cfg
        self.state_dir = state_dir
        # node -> at most this many bytes free there (control API: a storage that fills up
        # while the emulator runs, on one node only; kept in memory like the faults)
        self.free_limit: dict[str, int] = {}

    # -- configuration ------------------------------------------------------------------------

    @property
    def content(self) -> list[str]:
        return [c for c in str(self.cfg.get("content", "")).split(",") if c]

    @property
    def shared(self) -> bool:
        return self.type in SHARED_TYPES or bool(int(self.cfg.get("shared", 0)))

    @property
    def disabled(self) -> bool:
        return bool(int(self.cfg.get("disable", 0)))

    def available_on(self, node: str) -> bool:
        nodes = self.cfg.get("nodes")
        return not nodes or node in str(nodes).split(",")

    def check_enabled(self, node: str) -> None:
        if self.disabled:
            raise die(f"storage '{self.storeid}' is disabled")
        if not self.available_on(node):
            raise die(f"storage '{self.storeid}' is not available on node '{node}'")

    def default_format(self) -> str:
        return str(self.cfg.get("format") or self.formats[1])

    def resolve_format_hint(self, hint: str | None) -> str:
        """PVE::Storage::resolve_format_hint."""
        if hint and hint in self.formats[0]:
            return hint
        return self.default_format()

    def root(self, node: str) -> Path:
        if self.shared:
            return self.state_dir / "shared" / "storage" / self.storeid
        return self.state_dir / "nodes" / node / "storage" / self.storeid

    def api_config(self, node: str) -> dict[str, Any]:
        """The storage.cfg section as GET /storage returns it (emulator-only keys dropped,
        file-based storages showing the directory that holds their files on `node`)."""
        out: dict[str, Any] = {"storage": self.storeid, "type": self.type}
        for key, value in self.cfg.items():
            if key in ("type", "size"):
                continue
            out[key] = value
        if self.shared:
            out["shared"] = 1
        if self.has_path:
            out["path"] = str(self.root(node))
        return out

    has_path: ClassVar[bool] = False

    def prepare(self, node: str) -> None:
        """activate_storage: create the directory (and content subdirs) if missing."""
        root = self.root(node)
        root.mkdir(parents=True, exist_ok=True)

    # -- capacity -----------------------------------------------------------------------------

    def status(self, node: str) -> tuple[int, int, int]:
        """(total, avail, used) in bytes: the configured size (or the real free space of the
        filesystem, capped at 1 TiB) and the bytes the storage's files really occupy."""
        root = self.root(node)
        root.mkdir(parents=True, exist_ok=True)
        used = allocated_bytes(root)
        fs = os.statvfs(root)
        fs_free = fs.f_bavail * fs.f_frsize
        size = self.cfg.get("size")
        total = int(size) if size else min(used + fs_free, TiB)
        avail = max(0, min(total - used, fs_free, self.free_limit.get(node, fs_free)))
        return total, avail, used

    # -- volumes ------------------------------------------------------------------------------

    def parse_volname(self, volname: str) -> VolName:
        raise NotImplementedError

    def path(self, node: str, volname: str) -> Path:
        raise NotImplementedError

    def volid(self, volname: str) -> str:
        return f"{self.storeid}:{volname}"

    async def alloc(self, node: str, vmid: int, fmt: str, name: str | None, size_kib: int, log: LogFn) -> str:
        raise NotImplementedError

    async def free(self, node: str, volname: str, log: LogFn) -> None:
        raise NotImplementedError

    async def create_base(self, node: str, volname: str, log: LogFn) -> str:
        raise NotImplementedError

    async def clone_image(self, node: str, volname: str, vmid: int, log: LogFn) -> str:
        """Plugin clone_image: a linked clone of base volume ``volname`` for ``vmid``."""
        raise die("clone_image only works on base images")

    async def list_images(self, node: str, vmid: int | None) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def size_info(self, node: str, volname: str) -> disks.SizeInfo:
        raise NotImplementedError

    # feature -> "base" | "current" -> formats (None: any format), from the plugin's table
    features: ClassVar[dict[str, dict[str, frozenset[str] | None]]] = {}

    def volume_has_feature(self, feature: str, volname: str) -> bool:
        """Plugin volume_has_feature for a volume without a snapshot."""
        vol = self.parse_volname(volname)
        by_kind = self.features.get(feature, {})
        kind = "base" if vol.is_base else "current"
        if kind not in by_kind:
            return False
        formats = by_kind[kind]
        return formats is None or vol.format in formats

    def disk_names(self, node: str, vmid: int) -> list[str]:
        raise NotImplementedError

    def next_disk_name(self, node: str, vmid: int, fmt: str, suffix: bool) -> str:
        """Plugin.pm get_next_vm_diskname: the lowest free vm-<vmid>-disk-<n>."""
        used: set[int] = set()
        sfx = f".{fmt}" if suffix else ""
        regex = re.compile(rf"(vm|base)-{vmid}-disk-(\d+){re.escape(sfx)}")
        if "subvol" in self.formats[0]:
            regex = re.compile(rf"(vm|base|subvol|basevol)-{vmid}-disk-(\d+)")
        for name in self.disk_names(node, vmid):
            m = regex.search(name)
            if m:
                used.add(int(m.group(2)))
        for i in range(MAX_VOLUMES_PER_GUEST):
            if i not in used:
                return f"vm-{vmid}-disk-{i}{sfx}"
        raise die(f"unable to allocate an image name for VM {vmid} in storage '{self.storeid}'")

    async def list_volumes(
        self, node: str, vmid: int | None, content_types: list[str]
    ) -> list[dict[str, Any]]:
        """Plugin.pm list_volumes for the content types this storage has."""
        res: list[dict[str, Any]] = []
        for ctype in content_types:
            if ctype in ("images", "rootdir"):
                for item in await self.list_images(node, vmid):
                    # only VMs exist in the emulator, so their disks are 'images'
                    if ctype == "images":
                        item["content"] = "images"
                        res.append(item)
            elif self.has_path:
                res.extend(self._list_files(node, ctype, vmid))
        res.sort(key=lambda i: str(i["volid"]).lower())
        return res

    def _list_files(self, node: str, ctype: str, vmid: int | None) -> list[dict[str, Any]]:
        if ctype in ("iso", "vztmpl") and vmid is not None:
            return []
        subdir = self.root(node) / VTYPE_SUBDIRS[ctype]
        if not subdir.is_dir():
            return []
        out: list[dict[str, Any]] = []
        for entry in sorted(subdir.iterdir()):
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            name = entry.name
            info: dict[str, Any] | None = None
            if ctype == "iso":
                if re.search(rf"{ISO_EXT_RE}$", name, re.I):
                    info = {"volid": self.volid(f"iso/{name}"), "format": "iso"}
            elif ctype == "vztmpl":
                m = re.search(rf"{VZTMPL_EXT_RE}$", name)
                if m:
                    ext = m.group(1)
                    fmt = "tar" if ext == "tar" else "t" + ext.split(".")[1]
                    info = {"volid": self.volid(f"vztmpl/{name}"), "format": fmt}
            elif ctype == "backup":
                m = re.search(r"\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)$", name)
                if m and (vmid is None or re.search(rf"\S+-{vmid}-\S+", name)):
                    info = {"volid": self.volid(f"backup/{name}"), "format": m.group(1)}
                    owner = re.search(r"-([1-9][0-9]{2,8})-[^/]+$", name)
                    if vmid is not None or owner:
                        info["vmid"] = vmid if vmid is not None else int(owner.group(1))  # type: ignore[union-attr]
                    info["subtype"] = "qemu" if "-qemu-" in name else "unknown"
            elif ctype == "snippets":
                info = {"volid": self.volid(f"snippets/{name}"), "format": "snippet"}
            elif ctype == "import":
                m = re.fullmatch(rf"({SAFE_CHARS}+){IMPORT_EXT_RE}", name, re.I)
                if m:
                    info = {"volid": self.volid(f"import/{name}"), "format": m.group(2)}
            if info is None:
                continue
            info["size"] = st.st_size
            info["ctime"] = int(st.st_ctime)
            info["content"] = ctype
            out.append(info)
        return out


_IMAGE_FORMATS = frozenset({"raw", "qcow2", "vmdk"})
# LvmThinPlugin.pm, RBDPlugin.pm, ZFSPoolPlugin.pm (their tables do not look at the format)
_BLOCK_FEATURES: dict[str, dict[str, frozenset[str] | None]] = {
    "clone": {"base": None},
    "template": {"current": None},
    "copy": {"base": None, "current": None},
}


class DirStorage(Storage):
    type = "dir"
    has_path = True
    valid_content = frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import"})
    formats = (frozenset({"raw", "qcow2", "vmdk", "subvol"}), "raw")
    # Plugin.pm: a linked clone is a qcow2 overlay on a base volume of any image format
    features = {
        "clone": {"base": _IMAGE_FORMATS},
        "template": {"current": _IMAGE_FORMATS | {"subvol"}},
        "copy": {"base": _IMAGE_FORMATS, "current": _IMAGE_FORMATS},
    }

    def prepare(self, node: str) -> None:
        root = self.root(node)
        root.mkdir(parents=True, exist_ok=True)
        for ctype in self.content:
            if ctype in VTYPE_SUBDIRS:
                (root / VTYPE_SUBDIRS[ctype]).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def parse_name_dir(name: str) -> tuple[str, str, bool]:
        m = re.fullmatch(r"((vm-|base-|subvol-)(\d+)-[^/\s]+\.(raw|qcow2|vmdk|subvol))", name)
        if m:
            return m.group(1), m.group(4), m.group(2) == "base-"
        if re.fullmatch(r"snap-.*\.qcow2", name):
            raise die(f"'{name}' is a snapshot filename, not a volume!")
        m = re.fullmatch(r"((base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))", name)
        if m:
            return m.group(1), m.group(3), bool(m.group(2))
        raise die(f"unable to parse volume filename '{name}'")

    def parse_volname(self, volname: str) -> VolName:
        m = re.fullmatch(r"(\d+)/(\S+)/(\d+)/(\S+)", volname)
        if m:
            self.parse_name_dir(m.group(2))
            _, fmt, is_base = self.parse_name_dir(m.group(4))
            return VolName("images", m.group(4), int(m.group(3)), m.group(2), int(m.group(1)), is_base, fmt)
        m = re.fullmatch(r"(\d+)/(\S+)", volname)
        if m:
            _, fmt, is_base = self.parse_name_dir(m.group(2))
            return VolName("images", m.group(2), int(m.group(1)), None, None, is_base, fmt)
        m = re.fullmatch(rf"iso/([^/]+{ISO_EXT_RE})", volname, re.I)
        if m:
            return VolName("iso", m.group(1), None, None, None, False, "raw")
        m = re.fullmatch(rf"vztmpl/([^/]+{VZTMPL_EXT_RE})", volname)
        if m:
            return VolName("vztmpl", m.group(1), None, None, None, False, "raw")
        m = re.fullmatch(r"backup/([^/]+\.(?:tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?))", volname)
        if m:
            owner = re.match(r"vzdump-(?:openvz|lxc|qemu)-(\d+)-.+", m.group(1))
            vmid = int(owner.group(1)) if owner else None
            return VolName("backup", m.group(1), vmid, None, None, False, "raw")
        m = re.fullmatch(r"snippets/([^/]+)", volname)
        if m:
            return VolName("snippets", m.group(1), None, None, None, False, "raw")
        m = re.fullmatch(r"import/([ a-zA-Z0-9\-.+=_]+\.ova/[ a-zA-Z0-9\-.+=_]+\.(qcow2|raw|vmdk))", volname)
        if m:
            return VolName("import", m.group(1), None, None, None, False, f"ova+{m.group(2)}")
        m = re.fullmatch(rf"import/([ a-zA-Z0-9\-.+=_]+{IMPORT_EXT_RE})", volname)
        if m:
            return VolName("import", m.group(1), None, None, None, False, m.group(2))
        raise die(f"unable to parse directory volume name '{volname}'")

    def path(self, node: str, volname: str) -> Path:
        vol = self.parse_volname(volname)
        base = self.root(node) / VTYPE_SUBDIRS[vol.vtype]
        if vol.vtype == "images":
            base = base / str(vol.vmid)
        return base / vol.name

    def disk_names(self, node: str, vmid: int) -> list[str]:
        imagedir = self.root(node) / "images" / str(vmid)
        if not imagedir.is_dir():
            return []
        valid = "|".join(sorted(self.formats[0]))
        return [p.name for p in imagedir.iterdir() if re.search(rf"\.({valid})$", p.name)]

    async def alloc(self, node: str, vmid: int, fmt: str, name: str | None, size_kib: int, log: LogFn) -> str:
        imagedir = self.root(node) / "images" / str(vmid)
        imagedir.mkdir(parents=True, exist_ok=True)
        if not name:
            name = self.next_disk_name(node, vmid, fmt, suffix=True)
        _, tmpfmt, _ = self.parse_name_dir(name)
        if tmpfmt != fmt:
            raise die(f"illegal name '{name}' - wrong extension for format ('{tmpfmt} != '{fmt}')")
        path = imagedir / name
        if path.exists():
            raise die(f"disk image '{path}' already exists")
        if fmt == "subvol":
            raise die("storage does not support subvol quotas")
        try:
            await disks.create(fmt, path, size_kib, log)
        except BaseException:
            path.unlink(missing_ok=True)
            try:
                imagedir.rmdir()
            except OSError:
                pass
            raise
        return f"{vmid}/{name}"

    async def free(self, node: str, volname: str, log: LogFn) -> None:
        path = self.path(node, volname)
        if not (path.is_file() or path.is_symlink()):
            log(f"disk image '{path}' does not exist")
            return
        path.unlink()
        try:
            path.parent.rmdir()  # drop the empty <vmid> directory, as PVE does
        except OSError:
            pass

    async def create_base(self, node: str, volname: str, log: LogFn) -> str:
        vol = self.parse_volname(volname)
        if vol.vtype != "images":
            raise die(f"create_base on wrong vtype '{vol.vtype}'")
        if vol.is_base:
            raise die("create_base not possible with base image")
        path = self.path(node, volname)
        info = await disks.file_size_info(str(path), vol.format)
        if vol.basename and info.parent != f"../{vol.basevmid}/{vol.basename}":
            raise die(f"volname '{volname}' contains wrong information about parent")
        newname = re.sub(r"^vm-", "base-", vol.name)
        newvol = (
            f"{vol.basevmid}/{vol.basename}/{vol.vmid}/{newname}" if vol.basename else f"{vol.vmid}/{newname}"
        )
        newpath = self.path(node, newvol)
        if newpath.is_file():
            raise die(f"file '{newpath}' already exists")
        try:
            path.rename(newpath)
        except OSError as exc:
            raise die(f"rename '{path}' to '{newpath}' failed - {exc.strerror}") from None
        newpath.chmod(0o444)  # nobody should write a base image
        return newvol

    async def clone_image(self, node: str, volname: str, vmid: int, log: LogFn) -> str:
        """Plugin.pm clone_image: a qcow2 overlay whose backing file is the base volume."""
        vol = self.parse_volname(volname)
        if not vol.is_base:
            raise die("clone_image only works on base images")
        imagedir = self.root(node) / "images" / str(vmid)
        imagedir.mkdir(parents=True, exist_ok=True)
        name = self.next_disk_name(node, vmid, "qcow2", suffix=True)
        log(f"clone {volname}: images, {name}, {vmid} to {name} (base=../{vol.vmid}/{vol.name})")
        backing = f"../{vol.vmid}/{vol.name}"
        cmd = [disks.QEMU_IMG, "create", "-b", backing, "-F", vol.format, "-f", "qcow2", str(imagedir / name)]
        rc, _out, err = await disks.run(cmd)
        if rc != 0:
            raise die(err.strip() or f"command '{disks.cmd_string(cmd)}' failed: exit code {rc}")
        return f"{vol.vmid}/{vol.name}/{vmid}/{name}"

    async def list_images(self, node: str, vmid: int | None) -> list[dict[str, Any]]:
        imagedir = self.root(node) / "images"
        res: list[dict[str, Any]] = []
        if not imagedir.is_dir():
            return res
        valid = "|".join(sorted(self.formats[0]))
        for owner_dir in sorted(imagedir.iterdir()):
            if not re.fullmatch(r"[0-9][0-9]+", owner_dir.name) or not owner_dir.is_dir():
                continue
            owner = int(owner_dir.name)
            if vmid is not None and owner != vmid:
                continue
            for f in sorted(owner_dir.iterdir()):
                m = re.fullmatch(rf"(.+\.({valid}))", f.name)
                if not m:
                    continue
                try:
                    self.parse_name_dir(f.name)
                except Exception:
                    continue
                try:
                    si = await disks.file_size_info(str(f), m.group(2))
                except Exception:
                    continue
                volid = self.volid(f"{owner}/{f.name}")
                if si.parent:
                    pm = re.fullmatch(rf"\.\./(\d+)/([^/]+\.({valid}))", si.parent)
                    if pm:
                        volid = self.volid(f"{pm.group(1)}/{pm.group(2)}/{owner}/{f.name}")
                res.append(
                    {
                        "volid": volid,
                        "format": si.format,
                        "size": si.size,
                        "vmid": owner,
                        "used": si.used,
                        "parent": si.parent,
                        "ctime": si.ctime,
                    }
                )
        return res

    async def size_info(self, node: str, volname: str) -> disks.SizeInfo:
        vol = self.parse_volname(volname)
        path = self.path(node, volname)
        if vol.vtype in ("iso", "vztmpl", "backup", "snippets"):
            st = path.stat()
            return disks.SizeInfo(st.st_size, "raw", st.st_blocks * 512, None, int(st.st_ctime))
        fmt = vol.format if not vol.format.startswith("ova+") else None
        return await disks.file_size_info(str(path), fmt)


class NfsStorage(DirStorage):
    type = "nfs"
    formats = (frozenset({"raw", "qcow2", "vmdk"}), "raw")


class _BlockStorage(Storage):
    """Storages whose volumes are block devices named after the volume (raw only)."""

    valid_content = frozenset({"images", "rootdir"})
    granularity = 1 << 20
    features = _BLOCK_FEATURES
    # Whether a linked clone's volume name carries its base (rbd, zfspool: "base-X/vm-Y"):
    # the emulator keeps the base's name beside the clone's file (.parent-<clone>).
    names_parent: ClassVar[bool] = False

    def _parent_file(self, node: str, name: str) -> Path:
        return self.root(node) / f".parent-{name}"

    def _with_parent(self, node: str, name: str) -> str:
        """The volume name PVE lists for volume ``name`` (its base in front, if it has one)."""
        if not self.names_parent:
            return name
        try:
            return f"{self._parent_file(node, name).read_text().strip()}/{name}"
        except FileNotFoundError:
            return name

    async def clone_image(self, node: str, volname: str, vmid: int, log: LogFn) -> str:
        """A thin copy of a base volume (an LVM-thin snapshot, an RBD clone, a ZFS clone of
        the base's @__base__ snapshot): reflinked where the filesystem can."""
        vol = self.parse_volname(volname)
        if not vol.is_base:
            raise die("clone_image only works on base images")
        name = self.next_disk_name(node, vmid, "raw", suffix=False)
        dst = self.root(node) / name
        rc, _out, err = await disks.run(
            ["cp", "--reflink=auto", "--sparse=always", str(self.root(node) / vol.name), str(dst)]
        )
        if rc != 0:
            dst.unlink(missing_ok=True)
            raise die(err.strip())
        dst.chmod(0o644)
        if self.names_parent:
            self._parent_file(node, name).write_text(vol.name + "\n")
            return f"{vol.name}/{name}"
        return name

    def _remove(self, node: str, volname: str) -> bool:
        """Remove the volume's file (and its parent note); whether there was one."""
        vol = self.parse_volname(volname)
        path = self.root(node) / vol.name
        self._parent_file(node, vol.name).unlink(missing_ok=True)
        if not path.exists():
            return False
        path.chmod(0o644)
        path.unlink()
        return True

    def path(self, node: str, volname: str) -> Path:
        vol = self.parse_volname(volname)
        return self.root(node) / vol.name

    def disk_names(self, node: str, vmid: int) -> list[str]:
        root = self.root(node)
        if not root.is_dir():
            return []
        return [p.name for p in root.iterdir() if re.match(rf"(vm|base)-{vmid}-", p.name)]

    def _allocated_name(self, node: str, vmid: int, name: str | None) -> str:
        if name and not re.match(rf"vm-{vmid}-", name):
            raise die(f"illegal name '{name}' - should be 'vm-{vmid}-*'")
        return name or self.next_disk_name(node, vmid, "raw", suffix=False)

    def _create_file(self, node: str, name: str, size_kib: int) -> Path:
        path = self.root(node) / name
        if path.exists():
            raise die(f"volume '{name}' already exists")
        size = -(-size_kib * 1024 // self.granularity) * self.granularity
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)  # thin: nothing is allocated until written
        return path

    async def list_images(self, node: str, vmid: int | None) -> list[dict[str, Any]]:
        root = self.root(node)
        res: list[dict[str, Any]] = []
        if not root.is_dir():
            return res
        for f in sorted(root.iterdir()):
            m = re.match(r"(vm|base)-(\d+)-", f.name)
            if not m or not f.is_file():
                continue
            owner = int(m.group(2))
            if vmid is not None and owner != vmid:
                continue
            st = f.stat()
            res.append(self._image_entry(self._with_parent(node, f.name), owner, st))
        return res

    def _image_entry(self, name: str, owner: int, st: os.stat_result) -> dict[str, Any]:
        raise NotImplementedError

    async def size_info(self, node: str, volname: str) -> disks.SizeInfo:
        st = self.path(node, volname).stat()
        return disks.SizeInfo(st.st_size, "raw", st.st_blocks * 512, None, int(st.st_ctime))

    def _rename_to_base(self, node: str, volname: str) -> tuple[str, str]:
        vol = self.parse_volname(volname)
        if vol.is_base:
            raise die("create_base not possible with base image")
        newname = re.sub(r"^vm-", "base-", vol.name)
        src = self.root(node) / vol.name
        dst = self.root(node) / newname
        src.rename(dst)
        dst.chmod(0o444)
        return vol.name, newname


class LvmThinStorage(_BlockStorage):
    type = "lvmthin"
    granularity = LVM_EXTENT

    @property
    def vg(self) -> str:
        return str(self.cfg.get("vgname", "pve"))

    def parse_volname(self, volname: str) -> VolName:
        m = re.fullmatch(r"((vm|base)-(\d+)-\S+)", volname)
        if not m:
            raise die(f"unable to parse lvm volume name '{volname}'")
        return VolName("images", m.group(1), int(m.group(3)), None, None, m.group(2) == "base", "raw")

    async def alloc(self, node: str, vmid: int, fmt: str, name: str | None, size_kib: int, log: LogFn) -> str:
        if fmt != "raw":
            raise die(f"unsupported format '{fmt}'")
        name = self._allocated_name(node, vmid, name)
        self._create_file(node, name, size_kib)
        log(f'  Logical volume "{name}" created.')  # lvcreate's output in the task log
        return name

    async def free(self, node: str, volname: str, log: LogFn) -> None:
        if self._remove(node, volname):
            log(f'  Logical volume "{volname}" successfully removed.')

    async def create_base(self, node: str, volname: str, log: LogFn) -> str:
        old, new = self._rename_to_base(node, volname)
        log(f'  Renamed "{old}" to "{new}" in volume group "{self.vg}"')
        log(f"  Logical volume {self.vg}/{new} changed.")
        return new

    def _image_entry(self, name: str, owner: int, st: os.stat_result) -> dict[str, Any]:
        return {
            "volid": self.volid(name),
            "format": "raw",
            "size": st.st_size,
            "vmid": owner,
            "ctime": int(st.st_ctime),
        }


class RbdStorage(_BlockStorage):
    type = "rbd"
    names_parent = True

    def parse_volname(self, volname: str) -> VolName:
        m = re.fullmatch(r"((base-(\d+)-\S+)/)?((base)?(vm)?-(\d+)-\S+)", volname)
        if not m:
            raise die(f"unable to parse rbd volume name '{volname}'")
        basevmid = int(m.group(3)) if m.group(3) else None
        return VolName("images", m.group(4), int(m.group(7)), m.group(2), basevmid, bool(m.group(5)), "raw")

    async def alloc(self, node: str, vmid: int, fmt: str, name: str | None, size_kib: int, log: LogFn) -> str:
        if fmt != "raw":
            raise die(f"unsupported format '{fmt}'")
        name = self._allocated_name(node, vmid, name)
        self._create_file(node, name, size_kib)
        return name

    async def free(self, node: str, volname: str, log: LogFn) -> None:
        self._remove(node, volname)

    async def create_base(self, node: str, volname: str, log: LogFn) -> str:
        return self._rename_to_base(node, volname)[1]

    def _image_entry(self, name: str, owner: int, st: os.stat_result) -> dict[str, Any]:
        base, _, image = name.rpartition("/")
        return {
            "volid": self.volid(name),
            "name": image,
            "format": "raw",
            "size": st.st_size,
            "vmid": owner,
            "parent": f"{base}@__base__" if base else None,
            "ctime": int(st.st_ctime),
        }


class ZfsPoolStorage(RbdStorage):
    """ZFSPoolPlugin.pm for VM disks (zvols; no subvol: the emulator has no containers)."""

    type = "zfspool"

    def parse_volname(self, volname: str) -> VolName:
        m = re.fullmatch(r"(((base|basevol)-(\d+)-\S+)/)?((base|basevol|vm|subvol)-(\d+)-\S+)", volname)
        if not m:
            raise die(f"unable to parse zfs volume name '{volname}'")
        fmt = "subvol" if m.group(6) in ("subvol", "basevol") else "raw"
        basevmid = int(m.group(4)) if m.group(4) else None
        is_base = m.group(6) in ("base", "basevol")
        return VolName("images", m.group(5), int(m.group(7)), m.group(2), basevmid, is_base, fmt)


class LvmStorage(_BlockStorage):
    """LVMPlugin.pm (thick): volumes are allocated whole; copies only. Its template and clone
    features are commented out in PVE's table: a VM here becomes a template without a base
    volume (template_create skips the disk), and is cloned in full only."""

    type = "lvm"
    granularity = LVM_EXTENT
    features = {"copy": {"base": frozenset({"raw", "qcow2"}), "current": frozenset({"raw", "qcow2"})}}

    def parse_volname(self, volname: str) -> VolName:
        m = re.fullmatch(r"(vm-(\d+)-\S+)", volname)
        if not m:
            raise die(f"unable to parse lvm volume name '{volname}'")
        return VolName("images", m.group(1), int(m.group(2)), None, None, False, "raw")

    def disk_names(self, node: str, vmid: int) -> list[str]:
        return [n for n in super().disk_names(node, vmid) if n.startswith("vm-")]

    async def alloc(self, node: str, vmid: int, fmt: str, name: str | None, size_kib: int, log: LogFn) -> str:
        if fmt != "raw":
            raise die(f"unsupported format '{fmt}'")
        name = self._allocated_name(node, vmid, name)
        path = self._create_file(node, name, size_kib)
        with open(path, "r+b") as fh:  # thick: every extent allocated at once
            os.posix_fallocate(fh.fileno(), 0, path.stat().st_size)
        log(f'  Logical volume "{name}" created.')
        return name

    async def free(self, node: str, volname: str, log: LogFn) -> None:
        if self._remove(node, volname):
            log(f'  Logical volume "{volname}" successfully removed.')

    async def create_base(self, node: str, volname: str, log: LogFn) -> str:
        raise die("can't create base images in lvm storage")

    def _image_entry(self, name: str, owner: int, st: os.stat_result) -> dict[str, Any]:
        return {
            "volid": self.volid(name),
            "format": "raw",
            "size": st.st_size,
            "vmid": owner,
            "ctime": int(st.st_ctime),
        }


STORAGE_TYPES: dict[str, type[Storage]] = {
    "dir": DirStorage,
    "nfs": NfsStorage,
    "lvmthin": LvmThinStorage,
    "lvm": LvmStorage,
    "rbd": RbdStorage,
    "zfspool": ZfsPoolStorage,
}


def make_storage(storeid: str, cfg: dict[str, Any], state_dir: Path) -> Storage:
    try:
        cls = STORAGE_TYPES[cfg["type"]]
    except KeyError:
        raise ValueError(f"storage '{storeid}': unsupported type {cfg.get('type')!r}") from None
    return cls(storeid, cfg, state_dir)


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy a file keeping holes (used for clones of base volumes)."""
    shutil.copyfile(src, dst)
