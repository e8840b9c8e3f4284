"""GET /v1/vms, GET /v1/vms/{vmid}, DELETE /v1/vms/{vmid}: VMs on this node, ours judged
and destroyed by agent/vms.py."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import CLONER, IMPORTER, PVE, VM_JOURNAL
from agent.pve import PveCallError
from agent.pve_tasks import TaskFailed
from agent.routes.responses import answer, json_error
from agent.vms import CreateRunning, NotOurs, destroy, vm_config
from shared.error_slugs import ErrorSlug
from shared.messages.vms import ListedVm, VmConfigView, VmListing, VmRemoved


async def delete_vm(request: web.Request) -> web.Response:
    """DELETE /v1/vms/{vmid}?key_prefix=...[&if_idle=1]: idempotent; 404-free (absent is
    success). ``if_idle``: 409 ``vm_busy`` instead of waiting for a create or import on it."""
    vmid = int(request.match_info["vmid"])
    prefix = request.query.get("key_prefix", "")
    if not prefix:
        return json_error(400, ErrorSlug.INVALID_REQUEST, "key_prefix is required")
    if_idle = request.query.get("if_idle", "0") == "1"
    if if_idle and vmid in busy_vmids(request.app):
        return json_error(409, ErrorSlug.VM_BUSY, f"VM {vmid} is being imported or cloned on this node")
    try:
        done = await destroy(
            request.app[PVE], request.app[VM_JOURNAL], vmid, prefix, wait_for_create=not if_idle
        )
    except NotOurs as exc:
        return json_error(409, ErrorSlug.NOT_OURS, str(exc))
    except CreateRunning as exc:
        return json_error(409, ErrorSlug.VM_BUSY, str(exc))
    except (PveCallError, TaskFailed) as exc:
        return json_error(502, ErrorSlug.PVE_ERROR, f"destroying VM {vmid}: {exc}")
    if done is None:
        return answer(VmRemoved(vmid, removed=False))
    return answer(VmRemoved(vmid, removed=True, key=done.key, how=done.how))


def busy_vmids(app: web.Application) -> set[int]:
    """VMIDs an import or a clone of this agent is working on."""
    return app[IMPORTER].running_vmids() | app[CLONER].running_vmids()


async def list_vms(request: web.Request) -> web.Response:
    """GET /v1/vms?vmid_min=&vmid_max=: the VMs on this node that may be ours (in that VMID
    range, or in the journal), from one PVE call: ownership is judged by DELETE, which reads
    the config. Journal entries whose VM is gone and whose import has ended are dropped."""
    try:
        low = int(request.query.get("vmid_min", "100"))
        high = int(request.query.get("vmid_max", "999999999"))
    except ValueError:
        return json_error(400, ErrorSlug.INVALID_REQUEST, "vmid_min and vmid_max must be integers")
    pve, journal = request.app[PVE], request.app[VM_JOURNAL]
    try:
        listed = await pve.call("get", f"nodes/{pve.node}/qemu")
    except PveCallError as exc:
        return json_error(502, ErrorSlug.PVE_ERROR, str(exc))
    present = {int(vm["vmid"]): vm for vm in listed}
    importing = busy_vmids(request.app)
    for vmid in [v for v in journal.in_flight() if v not in present and v not in importing]:
        journal.forget(vmid)  # never created, or removed since
    in_flight = journal.in_flight()  # a finished clone's entry claims nothing: not listed for it
    vms = [
        ListedVm(
            vmid=vmid,
            name=str(vm.get("name", "")),
            lock=vm.get("lock"),
            template=int(vm.get("template") or 0) == 1,
            journal_key=entry.key if (entry := in_flight.get(vmid)) else None,
            importing=vmid in importing,
        )
        for vmid, vm in sorted(present.items())
        if low <= vmid <= high or vmid in in_flight
    ]
    return answer(VmListing(node=pve.node, vms=vms))


async def get_vm(request: web.Request) -> web.Response:
    vmid = int(request.match_info["vmid"])
    try:
        config = await vm_config(request.app[PVE], vmid)
    except PveCallError as exc:
        return json_error(502, ErrorSlug.PVE_ERROR, str(exc))
    if config is None:
        return json_error(404, ErrorSlug.VM_NOT_FOUND, f"VM {vmid} does not exist on this node")
    return answer(VmConfigView(vmid=vmid, config=config))
