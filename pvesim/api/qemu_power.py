"""Starting and stopping a VM (qemu-server API2/Qemu.pm vm_start, vm_stop).

The emulator runs no QEMU: a started VM is its pid file (Cluster.pid_file), which is what
PVE's check_running looks at too. What depends on a VM running (status, snapshots taken
while it runs, refusing to destroy or template it) reads that.
"""

from __future__ import annotations

from typing import Any

from pvesim.api import Request, route
from pvesim.errors import die
from pvesim.tasks import TaskContext


@route("POST", "/nodes/{node}/qemu/{vmid}/status/start")
async def vm_start(req: Request, params: dict[str, str]) -> Any:
    cluster, node, vmid = req.cluster, params["node"], int(params["vmid"])
    req.check(f"/vms/{vmid}", ["VM.PowerMgmt"])
    conf = cluster.load_vm(node, vmid)
    if conf.is_template:
        raise die("you can't start a vm if it's a template")

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, 10):
            current = cluster.load_vm(node, vmid)
            if current.lock:
                raise die(f"VM is locked ({current.lock})")
            if cluster.is_running(node, vmid):
                raise die(f"VM {vmid} already running")
            cluster.set_running(node, vmid, True)

    return req.fork_worker(node, "qmstart", str(vmid), worker)


@route("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
async def vm_stop(req: Request, params: dict[str, str]) -> Any:
    cluster, node, vmid = req.cluster, params["node"], int(params["vmid"])
    req.check(f"/vms/{vmid}", ["VM.PowerMgmt"])
    cluster.load_vm(node, vmid)

    async def worker(ctx: TaskContext) -> None:
        async with cluster.lock_vm(vmid, 10):
            cluster.set_running(node, vmid, False)  # (a stopped VM stays stopped, as in PVE)

    return req.fork_worker(node, "qmstop", str(vmid), worker)
