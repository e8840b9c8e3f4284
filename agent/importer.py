"""Importing a staged image into PVE as a VM template, on this node.

One import = create the VM with ``scsi0: STORAGE:0,import-from=<staged file>``
(PVE runs qemu-img convert in a task), then convert it to a template. Imports
are keyed: asking again with the same key returns the running or finished
import, so a restarted coordinator can pick up where it was. A VM left half
made by an import that died (agent restart) is destroyed and made again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta

from agent.appkeys import IMPORTER, PVE, STAGING
from agent.pve import NodePve, PveCallError
from agent.server_errors import json_error
from agent.staging import BadStagedName, Staging
from agent.tasks import LogFollower, TaskFailed, active_task, progress_from_log, wait_task
from agent.vms import NotOurs, destroy, marker, vm_config
from shared.validation import Input, parse

log = logging.getLogger(__name__)
DISK_KEY = "scsi0"


class ImportRequest(Input):
    key: Annotated[str, Meta(pattern="^t[0-9]+-[us][0-9]+\\Z")]
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
    staged_name: str
    storage: Annotated[str, Meta(pattern="^[a-zA-Z][a-zA-Z0-9\\-_.]*\\Z")]
    name: str
    description: str = ""
    options: dict[str, str | int | bool] = {}


@dataclass
class ImportOp:
    req: ImportRequest
    state: str = "running"  # running -> done | failed
    phase: str = "starting"
    progress: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # vmid_taken: pick another VMID and ask again
    volume_id: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.req.key,
            "vmid": self.req.vmid,
            "state": self.state,
            "phase": self.phase,
            "progress": round(self.progress, 2),
            "error": self.error,
            "error_kind": self.error_kind,
            "volume_id": self.volume_id,
        }


class ImportFailed(Exception):
    def __init__(self, message: str, kind: str = "pve_error") -> None:
        super().__init__(message)
        self.kind = kind


def disk_volume(config: dict[str, Any]) -> str:
    """'local-lvm:base-9000-disk-0,size=2G' -> 'local-lvm:base-9000-disk-0'."""
    return str(config.get(DISK_KEY, "")).split(",")[0]


class Importer:
    def __init__(self, pve: NodePve, staging: Staging) -> None:
        self.pve = pve
        self.staging = staging
        self.ops: dict[str, ImportOp] = {}

    def start(self, req: ImportRequest) -> ImportOp:
        op = self.ops.get(req.key)
        if op is not None and op.req.vmid == req.vmid and op.state != "failed":
            return op
        op = ImportOp(req)
        self.ops[req.key] = op
        op.task = asyncio.create_task(self._run(op), name=f"import-{req.key}")
        return op

    async def _run(self, op: ImportOp) -> None:
        req = op.req
        try:
            await self._import(op)
            op.state, op.phase, op.progress = "done", "done", 100.0
            log.info("import %s: VM %s is a template (%s)", req.key, req.vmid, op.volume_id)
            return
        except ImportFailed as exc:
            error, kind = str(exc), exc.kind
        except (PveCallError, TaskFailed) as exc:
            error, kind = str(exc), "pve_error"
        except asyncio.CancelledError:
            op.state, op.error, op.error_kind = "failed", "agent stopped during the import", "interrupted"
            raise
        log.warning("import %s failed: %s", req.key, error)
        if kind != "vmid_taken":  # a taken VMID is someone else's VM: never touch it
            await self._remove_half_made(op)
        # Failed only once the VM is gone: whoever reads "failed" may retry with this VMID.
        op.state, op.error, op.error_kind = "failed", error, kind

    async def _remove_half_made(self, op: ImportOp) -> None:
        """A failed import must not leave a VM behind that is not a template (PVE removes
        a VM whose create failed, but not one whose conversion to a template failed)."""
        op.phase = "removing the unfinished VM"
        try:
            if await destroy(self.pve, op.req.vmid, op.req.key):
                log.info("import %s: removed the unfinished VM %s", op.req.key, op.req.vmid)
        except (PveCallError, TaskFailed, NotOurs) as exc:
            # The coordinator's cascade delete removes it later (it is recorded on the job).
            log.warning("import %s: unfinished VM %s not removed: %s", op.req.key, op.req.vmid, exc)
        op.phase = "failed"

    async def _import(self, op: ImportOp) -> None:
        req, pve = op.req, self.pve
        mark = marker(req.key)
        existing = await vm_config(pve, req.vmid)
        if existing is None:
            # The VMID may be used on another node: PVE will refuse the create then.
            pass
        elif mark not in str(existing.get("description", "")):
            raise ImportFailed(f"VM {req.vmid} already exists and is not ours", "vmid_taken")
        elif int(existing.get("template", 0)) == 1:
            op.volume_id = disk_volume(existing)
            return
        else:
            op.phase = "cleaning up an unfinished earlier attempt"
            await destroy(pve, req.vmid, req.key)

        try:
            path = self.staging.path(req.staged_name)
        except BadStagedName as exc:
            raise ImportFailed(str(exc), "bad_request") from None
        if not path.exists():
            raise ImportFailed(f"staged image {req.staged_name} is not on this node", "missing_image")

        params: dict[str, Any] = dict(req.options)
        params.update(
            vmid=req.vmid,
            name=req.name,
            description=(req.description + "\n\n" if req.description else "") + mark,
            **{DISK_KEY: f"{req.storage}:0,import-from={path}"},
        )
        op.phase = "importing disk"

        def on_progress(pct: float) -> None:
            op.progress = min(pct, 99.0)

        # pvesh runs the create task in the foreground; follow its log meanwhile.
        create = asyncio.create_task(pve.call("create", f"nodes/{pve.node}/qemu", **params))
        follower: LogFollower | None = None
        while not create.done():
            await asyncio.wait({create}, timeout=1.0)
            if create.done():
                break
            try:
                if follower is None:
                    running = await active_task(pve, req.vmid, "qmcreate")
                    follower = LogFollower(pve, running) if running else None
                if follower is not None:
                    pct = progress_from_log(await follower.new_lines())
                    if pct is not None:
                        on_progress(pct)
            except PveCallError:
                pass  # progress is best effort; the create itself decides success
        try:
            upid = str(create.result())
        except PveCallError as exc:
            if "already exists" in str(exc):
                raise ImportFailed(f"VMID {req.vmid} is taken: {exc}", "vmid_taken") from None
            raise
        try:
            await wait_task(pve, upid, on_progress)
        except TaskFailed as exc:
            if "already exists" in str(exc):
                raise ImportFailed(f"VMID {req.vmid} is taken: {exc}", "vmid_taken") from None
            raise ImportFailed(f"PVE could not create VM {req.vmid}: {exc}") from None

        op.phase = "converting to template"
        upid = str(await pve.call("create", f"nodes/{pve.node}/qemu/{req.vmid}/template"))
        try:
            await wait_task(pve, upid)
        except TaskFailed as exc:
            raise ImportFailed(f"PVE could not convert VM {req.vmid} to a template: {exc}") from None
        config = await vm_config(pve, req.vmid)
        if config is None or int(config.get("template", 0)) != 1:
            raise ImportFailed(f"VM {req.vmid} is not a template after conversion")
        op.volume_id = disk_volume(config)


async def start_import(request: web.Request) -> web.Response:
    try:
        req = parse(ImportRequest, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, "invalid_request", str(exc)[:500])
    op = request.app[IMPORTER].start(req)
    return web.json_response(op.as_dict())


async def get_import(request: web.Request) -> web.Response:
    op = request.app[IMPORTER].ops.get(request.match_info["key"])
    if op is None:
        return json_error(404, "import_not_found", f"no import {request.match_info['key']} on this agent")
    return web.json_response(op.as_dict())


def make_importer(app: web.Application) -> Importer:
    return Importer(app[PVE], app[STAGING])
