"""The emulated cluster: its configuration, nodes, storages and VM configurations.

State directory layout (everything persists across restarts):

    config.json                      cluster name, nodes, storage definitions (+ sizes)
    access.json, root.secret         users/tokens, the pvesh shim's secret (0600)
    api-token.json, ca.pem, tls/     what clients need; certificates
    nodes/<node>/qemu-server/<vmid>.conf   VM configurations (PVE's file format)
    nodes/<node>/tasks/              task logs, index, active list
    nodes/<node>/storage/<storage>/  files of local storages
    nodes/<node>/bin/pvesh           the pvesh shim for that node
    shared/storage/<storage>/        files of shared storages (nfs, rbd)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pvesim.errors import die
from pvesim.storage import Storage, make_storage
from pvesim.vmconfig import VmConfig

DEFAULT_STORAGE: dict[str, dict[str, Any]] = {
    "local": {"type": "dir", "content": "images,iso,vztmpl,backup,import"},
    "local-lvm": {
        "type": "lvmthin",
        "vgname": "pve",
        "thinpool": "data",
        "content": "images,rootdir",
    },
    "ceph-storage": {
        "type": "rbd",
        "pool": "ceph-storage",
        "krbd": 0,
        "content": "images,rootdir",
    },
    "nfs-templates": {
        "type": "nfs",
        "server": "192.0.2.10",
        "export": "/export/pve-templates",
        "options": "vers=4.2",
        "content": "images,iso",
    },
}


def default_config(cluster_name: str, nodes: int) -> dict[str, Any]:
    return {
        "cluster_name": cluster_name,
        # corosync's config_version counts cluster membership changes
        "config_version": nodes,
        "nodes": [{"name": f"pve-node{i}", "nodeid": i, "ip": "127.0.0.1"} for i in range(1, nodes + 1)],
        "storage": json.loads(json.dumps(DEFAULT_STORAGE)),
        "auth_failure_delay": 3,
    }


# The shim's file, run as a script (pvesim/pvesh.py imports nothing of the project).
SHIM = Path(__file__).resolve().parent / "pvesh.py"
PVESH_WRAPPER = """#!/bin/sh
# pvesh for node {node} of the pvesim cluster in {state_dir}
# -S: the shim needs only the standard library (and starts faster without site-packages).
exec {python} -S {shim} --state-dir {state_dir} --node {node} "$@"
"""


class Cluster:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.config_path = self.state_dir / "config.json"
        self.config: dict[str, Any] = json.loads(self.config_path.read_text())
        self.nodes: list[str] = [n["name"] for n in self.config["nodes"]]
        self.node_info: dict[str, dict[str, Any]] = {n["name"]: n for n in self.config["nodes"]}
        self.online: dict[str, bool] = dict.fromkeys(self.nodes, True)
        self.boot_time: dict[str, float] = dict.fromkeys(self.nodes, time.time())
        self.storages: dict[str, Storage] = {
            sid: make_storage(sid, cfg, self.state_dir) for sid, cfg in sorted(self.config["storage"].items())
        }
        self.vmlist: dict[int, str] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._shared: dict[int, int] = {}  # VMID -> holders of a shared lock
        self.import_rate_limit: int | None = None
        for node in self.nodes:
            for storage in self.storages.values():
                if storage.available_on(node):
                    storage.prepare(node)
        self._scan_vms()

    # -- creation -----------------------------------------------------------------------------

    @classmethod
    def initialise(cls, state_dir: Path, cluster_name: str, nodes: int) -> bool:
        """Create the cluster in an empty state dir; False when it already exists."""
        state_dir.mkdir(parents=True, exist_ok=True)
        config_path = state_dir / "config.json"
        if config_path.exists():
            return False
        config = default_config(cluster_name, nodes)
        for node in config["nodes"]:
            (state_dir / "nodes" / node["name"] / "qemu-server").mkdir(parents=True, exist_ok=True)
        tmp = config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1) + "\n")
        os.replace(tmp, config_path)
        return True

    def write_pvesh_wrappers(self) -> None:
        """DIR/nodes/<node>/bin/pvesh: put that directory first in PATH to get the shim."""
        for node in self.nodes:
            bindir = self.state_dir / "nodes" / node / "bin"
            bindir.mkdir(parents=True, exist_ok=True)
            path = bindir / "pvesh"
            text = PVESH_WRAPPER.format(node=node, state_dir=self.state_dir, python=sys.executable, shim=SHIM)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                path.chmod(0o755)

    # -- nodes --------------------------------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        return str(self.config["cluster_name"])

    def set_online(self, node: str, online: bool) -> None:
        if online and not self.online[node]:
            self.boot_time[node] = time.time()
        self.online[node] = online

    @property
    def quorate(self) -> bool:
        return sum(self.online.values()) * 2 > len(self.nodes)

    def check_quorum(self) -> None:
        if not self.quorate:
            raise die("cluster not ready - no quorum?")

    # -- storage ------------------------------------------------------------------------------

    def storage(self, storeid: str) -> Storage:
        """PVE::Storage::storage_config."""
        if not storeid:
            raise die("no storage ID specified")
        found = self.storages.get(storeid)
        if found is None:
            raise die(f"storage '{storeid}' does not exist")
        return found

    def storage_cfg_digest(self) -> str:
        """Digest of storage.cfg as PVE renders it (sections in config order)."""
        raw = ""
        for sid, cfg in self.config["storage"].items():
            raw += f"{cfg['type']}: {sid}\n"
            for key, value in cfg.items():
                if key not in ("type", "size"):
                    raw += f"\t{key} {value}\n"
            raw += "\n"
        return hashlib.sha1(raw.encode()).hexdigest()

    def volume(self, volid: str) -> tuple[Storage, str]:
        from pvesim.storage import parse_volume_id

        parsed = parse_volume_id(volid)
        if not parsed:
            raise die(f"unable to parse volume ID '{volid}'")
        return self.storage(parsed[0]), parsed[1]

    # -- VMs ----------------------------------------------------------------------------------

    def _scan_vms(self) -> None:
        for node in self.nodes:
            confdir = self.state_dir / "nodes" / node / "qemu-server"
            confdir.mkdir(parents=True, exist_ok=True)
            for path in confdir.glob("*.conf"):
                if re.fullmatch(r"\d+\.conf", path.name):
                    self.vmlist[int(path.stem)] = node

    def config_file(self, node: str, vmid: int) -> Path:
        return self.state_dir / "nodes" / node / "qemu-server" / f"{vmid}.conf"

    def check_vmid_unused(self, vmid: int) -> None:
        """PVE::Cluster::check_vmid_unused."""
        node = self.vmlist.get(vmid)
        if node is not None:
            raise die(f"VM {vmid} already exists on node '{node}'")

    def load_vm(self, node: str, vmid: int) -> VmConfig:
        """PVE::AbstractConfig::load_config (config of `vmid` on `node`)."""
        path = self.config_file(node, vmid)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            raise die(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist") from None
        return VmConfig.parse(raw)

    def write_vm(self, node: str, vmid: int, conf: VmConfig) -> None:
        path = self.config_file(node, vmid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{vmid}.conf.tmp")
        tmp.write_text(conf.render())
        os.replace(tmp, path)
        self.vmlist[vmid] = node

    def pid_file(self, node: str, vmid: int) -> Path:
        """/var/run/qemu-server/<vmid>.pid: there while the (emulated) VM runs. A file, not
        memory: VMs keep running when PVE's daemons (the emulator) restart."""
        return self.state_dir / "nodes" / node / "run" / "qemu-server" / f"{vmid}.pid"

    def is_running(self, node: str, vmid: int) -> bool:
        return self.pid_file(node, vmid).exists()

    def set_running(self, node: str, vmid: int, running: bool) -> None:
        path = self.pid_file(node, vmid)
        if running:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n")
        else:
            path.unlink(missing_ok=True)

    def destroy_vm_config(self, node: str, vmid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.config_file(node, vmid).unlink()
        self.set_running(node, vmid, False)
        if self.vmlist.get(vmid) == node:
            del self.vmlist[vmid]

    async def _lock_vm_file(self, vmid: int, timeout: float) -> asyncio.Lock:
        """flock on the VM's lock file, failing like PVE's after ``timeout``."""
        lock = self._locks.setdefault(vmid, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise die(f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout") from None
        return lock

    @contextlib.asynccontextmanager
    async def lock_vm(self, vmid: int, timeout: float) -> AsyncIterator[None]:
        """lock_config_full: a per-VMID exclusive lock; it also waits for the holders of shared
        locks (lock_vm_shared) to let go."""
        deadline = time.monotonic() + timeout
        lock = await self._lock_vm_file(vmid, timeout)
        try:
            while self._shared.get(vmid):
                if time.monotonic() >= deadline:
                    raise die(f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
                await asyncio.sleep(0.05)
            yield
        finally:
            lock.release()

    @contextlib.asynccontextmanager
    async def lock_vm_shared(self, vmid: int, timeout: float) -> AsyncIterator[None]:
        """lock_config_shared (flock LOCK_SH): any number of holders at once (clones of one
        stopped template run side by side), none while an exclusive lock is held."""
        lock = await self._lock_vm_file(vmid, timeout)
        self._shared[vmid] = self._shared.get(vmid, 0) + 1
        lock.release()
        try:
            yield
        finally:
            self._shared[vmid] -= 1
            if not self._shared[vmid]:
                del self._shared[vmid]

    def next_pid_dirs_cleanup(self) -> None:
        """Remove leftovers of interrupted atomic writes."""
        for node in self.nodes:
            for tmp in (self.state_dir / "nodes" / node / "qemu-server").glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def remove_state(self) -> None:  # pragma: no cover - helper for manual resets
        shutil.rmtree(self.state_dir)
