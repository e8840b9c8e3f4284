"""VMs made through the emulator's PVE API as an administrator would (root), to be the source
of a template: created from an image (``import-from``), started, snapshotted, written to."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from demo.stack import Stack
from tests.support import images
from tests.support.uploads import local_image_dir

TASK_TIMEOUT = 60.0


def pve(stack: Stack, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """PVE's API (/api2/json) as root@pam; the ``data`` of its answer."""
    info = stack.pve_token()
    secret = (stack.pvesim_dir / "root.secret").read_text().strip()
    in_query = method in ("GET", "DELETE")
    resp = requests.request(
        method,
        info["api_url"].rstrip("/") + "/api2/json" + path,
        params=params if in_query else None,
        data=None if in_query else params,
        headers={"Authorization": f"PVESimRoot={secret}"},
        verify=info["ca_file"],
        timeout=30,
    )
    assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text}"
    return resp.json()["data"]


def run_task(stack: Stack, node: str, method: str, path: str, params: dict[str, Any] | None = None) -> None:
    """A PVE call that starts a task, waited for; it must end OK."""
    upid = pve(stack, method, path, params)
    deadline = time.monotonic() + TASK_TIMEOUT
    while True:
        status = pve(stack, "GET", f"/nodes/{node}/tasks/{upid}/status")
        if status["status"] == "stopped":
            assert status["exitstatus"] == "OK", f"{path}: {status}"
            return
        assert time.monotonic() < deadline, f"{path}: task {upid} still running"
        time.sleep(0.1)


def create_vm(stack: Stack, node: str, vmid: int, image: Path, storage: str = "local") -> Path:
    """VM ``vmid`` on ``node`` with one qcow2 disk (scsi0, the boot disk) imported from
    ``image``, and a CD-ROM drive; returns the disk's file."""
    params = {
        "vmid": vmid,
        "name": f"source-{vmid}",
        "memory": 512,
        "scsi0": f"{storage}:0,import-from={image},format=qcow2",
        "ide2": "none,media=cdrom",
        "boot": "order=ide2;scsi0",
    }
    run_task(stack, node, "POST", f"/nodes/{node}/qemu", params)
    return local_image_dir(stack, node, storage, vmid) / f"vm-{vmid}-disk-0.qcow2"


def destroy_vm(stack: Stack, node: str, vmid: int) -> None:
    if pve(stack, "GET", f"/nodes/{node}/qemu/{vmid}/status/current")["status"] == "running":
        run_task(stack, node, "POST", f"/nodes/{node}/qemu/{vmid}/status/stop")
    run_task(stack, node, "DELETE", f"/nodes/{node}/qemu/{vmid}")


def free_vmid(stack: Stack) -> int:
    return int(pve(stack, "GET", "/cluster/nextid"))


def write_pattern(disk: Path, byte: int, offset: int = 0, length: int = 2 << 20) -> None:
    """Guest writes, as seen from the host: ``length`` bytes of ``byte`` into the qcow2's
    current state (its snapshots keep what they had)."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {offset} {length}", str(disk)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def template_disk(stack: Stack, node: str, vmid: int) -> Path:
    """The one disk of template VM ``vmid`` on ``local`` of ``node`` (raw: the emulator's dir
    storage's format for imports)."""
    found = sorted(local_image_dir(stack, node, "local", vmid).iterdir())
    assert [p.name for p in found] == [f"base-{vmid}-disk-0.raw"], found
    return found[0]


def same_disk(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return images.compare(a, a_fmt, b, b_fmt).returncode == 0


def config_text(stack: Stack, node: str, vmid: int) -> str:
    return (stack.pvesim_dir / "nodes" / node / "qemu-server" / f"{vmid}.conf").read_text()
