"""VMs on this node: look one up, list ours, destroy one we made (never anyone else's).

A VM is ours when its description carries our marker, or when it was cut off mid-create
(``lock: create``, no marker yet) at a VMID in this agent's journal (agent/vm_journal.py).
A create still running is waited for (a cascade delete) or left alone (the sweep): only a
``lock: create`` that no running create task holds is stale, and only then is it skipped
with ``skiplock`` (PVE refuses to destroy a locked VM otherwise; only root@pam may skip a
lock, which the local pvesh backend is: an https API token cannot remove such a VM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.appkeys import IMPORTER, PVE, VM_JOURNAL
from agent.pve import NodePve, PveCallError
from agent.server_errors import json_error
from agent.tasks import TaskFailed, TaskLimit, WaitEnded, active_task, run_task, wait_task
from agent.vm_journal import CREATE_LOCK, VmJournal, belongs, owner_key

log = logging.getLogger(__name__)
# How long a destroy may wait on PVE: within the 600 s the coordinator waits for the answer
# (agent/client.py delete_vm). A late destroy is not stopped (that would leave a broken VM).
DESTROY_SECONDS = 540.0
# One destroy of a VMID at a time (a cascade delete and the sweep may ask together): the
# second then finds the VM gone instead of failing on PVE's config lock.
_destroying: dict[int, asyncio.Lock] = {}


@asynccontextmanager
async def _one_at_a_time(vmid: int) -> AsyncIterator[None]:
    lock = _destroying.setdefault(vmid, asyncio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.locked() and _destroying.get(vmid) is lock:
            del _destroying[vmid]


async def vm_config(pve: NodePve, vmid: int) -> dict[str, Any] | None:
    """The VM's config if it exists on this node, else None."""
    vms = await pve.call("get", f"nodes/{pve.node}/qemu")
    if not any(int(vm.get("vmid", -1)) == vmid for vm in vms):
        return None
    config: dict[str, Any] = await pve.call("get", f"nodes/{pve.node}/qemu/{vmid}/config")
    return config


class NotOurs(Exception):
    pass


@dataclass(frozen=True)
class Destroyed:
    key: str  # the import that made it
    cut_off: bool  # found at a stale `lock: create`: ours by the journal, not by a marker

    @property
    def how(self) -> str:
        return "cut off mid-create, ours by the VM journal" if self.cut_off else "ours by its marker"


class CreateRunning(Exception):
    pass


def _check_ours(pve: NodePve, vmid: int, config: dict[str, Any], journal: VmJournal, prefix: str) -> str:
    key = owner_key(config, journal.get(vmid))
    if key is None or not belongs(key, prefix):
        raise NotOurs(
            f"VM {vmid} on {pve.node} was not created by pvesphere for {prefix!r} "
            "(no marker in its description, and not a create of ours cut off); not deleting it"
        )
    return key


async def destroy(
    pve: NodePve, journal: VmJournal, vmid: int, key_prefix: str, *, wait_for_create: bool = True
) -> Destroyed | None:
    """Destroy VM ``vmid`` if it is ours under ``key_prefix`` (vm_journal.belongs): None if
    there was no VM. A create still running on it is waited for,
    or raises CreateRunning without ``wait_for_create``."""
    async with _one_at_a_time(vmid):
        config = await vm_config(pve, vmid)
        if config is None:
            journal.forget(vmid)
            return None
        key = _check_ours(pve, vmid, config, journal, key_prefix)
        limit = TaskLimit(DESTROY_SECONDS)
        running = await active_task(pve, vmid, "qmcreate")
        if running:
            if not wait_for_create:
                raise CreateRunning(f"VM {vmid} on {pve.node} is being created (task {running})")
            try:
                await wait_task(pve, running, limit)
            except WaitEnded:
                raise
            except TaskFailed:
                pass  # PVE removes the VM of a failed create itself
            config = await vm_config(pve, vmid)  # what the create's end left
            if config is None:
                journal.forget(vmid)
                return None
            key = _check_ours(pve, vmid, config, journal, key_prefix)
        params: dict[str, Any] = {"purge": 1, "destroy-unreferenced-disks": 1}
        stale_lock = config.get("lock") == CREATE_LOCK
        if stale_lock:
            params["skiplock"] = 1  # no create task holds it any more: it was cut off
        await run_task(
            pve,
            limit,
            "qmdestroy",
            vmid,
            "delete",
            f"nodes/{pve.node}/qemu/{vmid}",
            params,
            stop_when_late=False,
        )
        journal.forget(vmid)
    done = Destroyed(key, stale_lock)
    log.info("destroyed VM %s on %s (import %s; %s)", vmid, pve.node, key, done.how)
    return done


async def delete_vm(request: web.Request) -> web.Response:
    """DELETE /v1/vms/{vmid}?key_prefix=...[&if_idle=1]: idempotent; 404-free (absent is
    success). ``if_idle``: 409 ``vm_busy`` instead of waiting for a create or import on it."""
    vmid = int(request.match_info["vmid"])
    prefix = request.query.get("key_prefix", "")
    if not prefix:
        return json_error(400, "invalid_request", "key_prefix is required")
    if_idle = request.query.get("if_idle", "0") == "1"
    if if_idle and vmid in request.app[IMPORTER].running_vmids():
        return json_error(409, "vm_busy", f"VM {vmid} is being imported on this node")
    try:
        done = await destroy(
            request.app[PVE], request.app[VM_JOURNAL], vmid, prefix, wait_for_create=not if_idle
        )
    except NotOurs as exc:
        return json_error(409, "not_ours", str(exc))
    except CreateRunning as exc:
        return json_error(409, "vm_busy", str(exc))
    except (PveCallError, TaskFailed) as exc:
        return json_error(502, "pve_error", f"destroying VM {vmid}: {exc}")
    if done is None:
        return web.json_response({"vmid": vmid, "removed": False})
    return web.json_response({"vmid": vmid, "removed": True, "key": done.key, "how": done.how})


async def list_vms(request: web.Request) -> web.Response:
    """GET /v1/vms?vmid_min=&vmid_max=: the VMs on this node that may be ours (in that VMID
    range, or in the journal), from one PVE call: ownership is judged by DELETE, which reads
    the config. Journal entries whose VM is gone and whose import has ended are dropped."""
    try:
        low = int(request.query.get("vmid_min", "100"))
        high = int(request.query.get("vmid_max", "999999999"))
    except ValueError:
        return json_error(400, "invalid_request", "vmid_min and vmid_max must be integers")
    pve, journal = request.app[PVE], request.app[VM_JOURNAL]
    try:
        listed = await pve.call("get", f"nodes/{pve.node}/qemu")
    except PveCallError as exc:
        return json_error(502, "pve_error", str(exc))
    present = {int(vm["vmid"]): vm for vm in listed}
    importing = request.app[IMPORTER].running_vmids()
    for vmid in [v for v in journal.entries if v not in present and v not in importing]:
        journal.forget(vmid)  # never created, or removed since
    vms = [
        {
            "vmid": vmid,
            "name": str(vm.get("name", "")),
            "lock": vm.get("lock"),
            "template": int(vm.get("template") or 0) == 1,
            "journal_key": entry.key if (entry := journal.get(vmid)) else None,
            "importing": vmid in importing,
        }
        for vmid, vm in sorted(present.items())
        if low <= vmid <= high or vmid in journal.entries
    ]
    return web.json_response({"node": pve.node, "vms": vms})


async def get_vm(request: web.Request) -> web.Response:
    vmid = int(request.match_info["vmid"])
    try:
        config = await vm_config(request.app[PVE], vmid)
    except PveCallError as exc:
        return json_error(502, "pve_error", str(exc))
    if config is None:
        return json_error(404, "vm_not_found", f"VM {vmid} does not exist on this node")
    return web.json_response({"vmid": vmid, "config": config})
