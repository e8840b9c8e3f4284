"""The demo's VM 100 on pve-node1: a small stopped VM with a real disk (and a snapshot
"golden"), for the README's "template from a VM" examples (POST /templates/from-vm with
vmid 100). Made through the emulator's PVE API as root, as an administrator would make a
VM, when the demo starts without it (a rerun finds it). The tests' stacks do not get it:
they expect an empty cluster (VM counts, PVE's next free VMID)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

VMID = 100
NODE = "pve-node1"
SNAPSHOT = "golden"
DISK_BYTES = 32 << 20
# Written at the disk's start: bytes an export carries (the rest reads as zeros).
DATA_BYTES = 4 << 20
TASK_DEADLINE = 60.0


def disk_data() -> bytes:
    """The disk's first ``DATA_BYTES``: a recognisable text, repeated (pure)."""
    line = b"pvesphere demo: the disk of VM 100, the README's template-from-a-VM example\n"
    return (line * (DATA_BYTES // len(line) + 1))[:DATA_BYTES]


class RootPve:
    """The emulator's PVE API (/api2/json) as root@pam, from its state directory."""

    def __init__(self, pvesim_dir: Path) -> None:
        token = json.loads((pvesim_dir / "api-token.json").read_text())
        self.url = token["api_url"].rstrip("/") + "/api2/json"
        self.context = ssl.create_default_context(cafile=token["ca_file"])
        self.secret = (pvesim_dir / "root.secret").read_text().strip()

    def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        form = urllib.parse.urlencode(params or {})
        in_query = method in ("GET", "DELETE")
        url = self.url + path + (f"?{form}" if in_query and form else "")
        req = urllib.request.Request(url, data=None if in_query else form.encode(), method=method)
        req.add_header("Authorization", f"PVESimRoot={self.secret}")
        with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
            return json.loads(resp.read())["data"]

    def run_task(self, method: str, path: str, params: dict[str, Any]) -> None:
        """A call that starts a PVE task, waited for (at most ``TASK_DEADLINE``); it must end OK."""
        upid = self.call(method, path, params)
        deadline = time.monotonic() + TASK_DEADLINE
        while True:
            status = self.call("GET", f"/nodes/{NODE}/tasks/{urllib.parse.quote(upid)}/status")
            if status["status"] == "stopped":
                if status.get("exitstatus") != "OK":
                    raise RuntimeError(f"{method} {path}: PVE's task ended {status.get('exitstatus')!r}")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{method} {path}: PVE's task {upid} still runs after {TASK_DEADLINE:.0f} s"
                )
            time.sleep(0.2)


def ensure_sample_vm(pvesim_dir: Path, work_dir: Path) -> bool:
    """VM 100 on pve-node1, made unless it is there already; whether it was made now.
    ``work_dir``: where its source image is written for the import, and removed after."""
    pve = RootPve(pvesim_dir)
    if any(int(vm["vmid"]) == VMID for vm in pve.call("GET", f"/nodes/{NODE}/qemu")):
        return False
    source = work_dir / f"sample-vm-{VMID}.raw"
    with open(source, "wb") as f:
        f.write(disk_data())
        f.truncate(DISK_BYTES)
    try:
        params = {
            "vmid": VMID,
            "name": "web",
            "memory": 512,
            "ostype": "l26",
            "scsi0": f"local:0,import-from={source},format=qcow2",
            "boot": "order=scsi0",
        }
        pve.run_task("POST", f"/nodes/{NODE}/qemu", params)
    finally:
        source.unlink(missing_ok=True)
    pve.run_task("POST", f"/nodes/{NODE}/qemu/{VMID}/snapshot", {"snapname": SNAPSHOT})
    return True
