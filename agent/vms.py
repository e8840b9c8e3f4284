"""VMs on this node: look one up, destroy one we made (never anyone else's)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from agent.appkeys import PVE
from agent.pve import NodePve, PveCallError
from agent.server_errors import json_error
from agent.tasks import TaskFailed, TaskLimit, active_task, run_task, wait_task

log = logging.getLogger(__name__)
# How long a destroy may wait on PVE: within the 600 s the coordinator waits for the answer
# (agent/client.py delete_vm). A late destroy is not stopped (that would leave a broken VM).
DESTROY_SECONDS = 540.0


def marker(key: str) -> str:
    """Written into the description of every VM we create; proves the VM is ours."""
    return f"[pvesphere {key}]"


async def vm_config(pve: NodePve, vmid: int) -> dict[str, Any] | None:
    """The VM's config if it exists on this node, else None."""
    vms = await pve.call("get", f"nodes/{pve.node}/qemu")
    if not any(int(vm.get("vmid", -1)) == vmid for vm in vms):
        return None
    config: dict[str, Any] = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/config")
    return config


class NotOurs(Exception):
    pass


async def destroy(pve: NodePve, vmid: int, key_prefix: str) -> bool:
    """Destroy VM ``vmid`` if its description carries our marker prefix. False if absent."""
    config = await vm_config(pve, vmid)
    if config is None:
        return False
    if marker(key_prefix).rstrip("]") not in str(config.get("description", "")):
        raise NotOurs(
            f"VM {vmid} on {pve.node} was not created by pvesphere for this template "
            "(its description lacks the marker); not deleting it"
        )
    limit = TaskLimit(DESTROY_SECONDS)
    running = await active_task(pve, vmid, "qmcreate")
    if running:
        await wait_task(pve, running, limit)
    await run_task(
        pve,
        limit,
        "qmdestroy",
        vmid,
        "delete",
        f"nodes/{pve.node}/qemu/{vmid}",
        {"purge": 1, "destroy-unreferenced-disks": 1},
        stop_when_late=False,
    )
    log.info("destroyed VM %s on %s", vmid, pve.node)
    return True


async def delete_vm(request: web.Request) -> web.Response:
    """DELETE /v1/vms/{vmid}?key_prefix=...: idempotent; 404-free (absent is success)."""
    vmid = int(request.match_info["vmid"])
    prefix = request.query.get("key_prefix", "")
    if not prefix:
        return json_error(400, "invalid_request", "key_prefix is required")
    try:
        removed = await destroy(request.app[PVE], vmid, prefix)
    except NotOurs as exc:
        return json_error(409, "not_ours", str(exc))
    except (PveCallError, TaskFailed) as exc:
        return json_error(502, "pve_error", f"destroying VM {vmid}: {exc}")
    return web.json_response({"vmid": vmid, "removed": removed})


async def get_vm(request: web.Request) -> web.Response:
    vmid = int(request.match_info["vmid"])
    try:
        config = await vm_config(request.app[PVE], vmid)
    except PveCallError as exc:
        return json_error(502, "pve_error", str(exc))
    if config is None:
        return json_error(404, "vm_not_found", f"VM {vmid} does not exist on this node")
    return web.json_response({"vmid": vmid, "config": config})
