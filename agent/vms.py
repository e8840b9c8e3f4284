"""VMs on this node: look one up, list ours, destroy one we made (never anyone else's).

A VM is ours when its description carries our marker, or when it was cut off mid-create
(``lock: create``, no marker yet) at a VMID in this agent's journal (agent/vm_journal.py).
A create still running is waited for (a cascade delete) or left alone (the sweep): only a
``lock: create`` that no running create task holds is stale, and only then is it skipped
with ``skiplock`` (PVE refuses to destroy a locked VM otherwise; only root@pam may skip a
lock, which the local pvesh backend is: an https API token cannot remove such a VM).

A clone cut off (``lock: clone``, agent/cloner.py) is judged the same way against PVE's
clone tasks. Those are named after the clone's source VM, not the new one, so any clone task
on the node (or, when the caller knows the source, one of that source) counts as running.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentFault
from agent.pve import NodePve, PveCallError
from agent.pve_tasks import TaskFailed, TaskLimit, WaitEnded, active_task, run_task, wait_task
from agent.vm_journal import CLONE_LOCK, CREATE_LOCK, VmJournal, belongs, owner_key

log = logging.getLogger(__name__)
# What PVE answers for a VM that is not on the node asked (qemu-server's load_config dies
# with it; the API makes it a 500).
_NO_CONFIG = re.compile(r"Configuration file 'nodes/[^/']+/qemu-server/\d+\.conf' does not exist")
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


async def vm_config(pve: NodePve, vmid: int, node: str | None = None) -> dict[str, Any] | None:
    """The VM's config if it exists on ``node`` (this node by default), else None.

    One call, not a listing of the node's VMs first: on PVE every pvesh call is a Perl
    interpreter loading the API (and in the test suite's emulator, the most frequent
    process started: listing first doubled the calls of an import or a clone)."""
    node = node or pve.node
    try:
        config: dict[str, Any] = await pve.call("get", f"nodes/{node}/qemu/{vmid}/config")
    except PveCallError as exc:
        if _NO_CONFIG.search(str(exc)) and f"/{node}/qemu-server/{vmid}.conf" in str(exc):
            return None
        raise
    return config


class NotOurs(AgentFault):
    pass


@dataclass(frozen=True)
class Destroyed:
    key: str  # the import that made it
    cut_off: bool  # found at a stale `lock: create`: ours by the journal, not by a marker

    @property
    def how(self) -> str:
        return "cut off mid-create, ours by the VM journal" if self.cut_off else "ours by its marker"


class CreateRunning(AgentFault):
    pass


def _check_ours(node: str, vmid: int, config: dict[str, Any], journal: VmJournal, prefix: str) -> str:
    key = owner_key(config, journal.get(vmid))
    if key is None or not belongs(key, prefix):
        raise NotOurs(
            f"VM {vmid} on {node} was not created by pvesphere for {prefix!r} "
            "(no marker in its description, and not a create of ours cut off); not deleting it"
        )
    return key


async def _running_create(
    pve: NodePve, node: str, vmid: int, config: dict[str, Any], clone_source: int | None
) -> str | None:
    """The UPID of a create or clone task that may still be making VM ``vmid``, if any."""
    if config.get("lock") == CLONE_LOCK:
        return await active_task(pve, clone_source, "qmclone", node)
    return await active_task(pve, vmid, "qmcreate", node)


async def destroy(
    pve: NodePve,
    journal: VmJournal,
    vmid: int,
    key_prefix: str,
    *,
    wait_for_create: bool = True,
    node: str | None = None,
    clone_source: int | None = None,
) -> Destroyed | None:
    """Destroy VM ``vmid`` on ``node`` (this node by default) if it is ours under
    ``key_prefix`` (vm_journal.belongs): None if there was no VM. A create still running on
    it is waited for, or raises CreateRunning without ``wait_for_create``; for a VM at ``lock:
    clone``, ``clone_source`` narrows the clone tasks that count to those of that source VM."""
    node = node or pve.node
    async with _one_at_a_time(vmid):
        config = await vm_config(pve, vmid, node)
        if config is None:
            journal.forget(vmid)
            return None
        key = _check_ours(node, vmid, config, journal, key_prefix)
        limit = TaskLimit(DESTROY_SECONDS)
        running = await _running_create(pve, node, vmid, config, clone_source)
        if running:
            if not wait_for_create:
                raise CreateRunning(f"VM {vmid} on {node} is being created (task {running})")
            try:
                await wait_task(pve, running, limit)
            except WaitEnded:
                raise
            except TaskFailed:
                pass  # PVE removes the VM of a failed create or clone itself
            config = await vm_config(pve, vmid, node)  # what the create's end left
            if config is None:
                journal.forget(vmid)
                return None
            key = _check_ours(node, vmid, config, journal, key_prefix)
        params: dict[str, Any] = {"purge": 1, "destroy-unreferenced-disks": 1}
        stale_lock = config.get("lock") in (CREATE_LOCK, CLONE_LOCK)
        if stale_lock:
            params["skiplock"] = 1  # no create task holds it any more: it was cut off
        await run_task(
            pve,
            limit,
            "qmdestroy",
            vmid,
            "delete",
            f"nodes/{node}/qemu/{vmid}",
            params,
            stop_when_late=False,
            node=node,
        )
        journal.forget(vmid)
    done = Destroyed(key, stale_lock)
    log.info("destroyed VM %s on %s (%s; %s)", vmid, node, key, done.how)
    return done
