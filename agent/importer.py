"""Importing a staged image into PVE as a VM template, on this node.

One import = create the VM with ``scsi0: STORAGE:0,import-from=<staged file>``
(PVE runs qemu-img convert in a task), then convert it to a template. Imports
are keyed: asking again with the same key returns the running or finished
import, so a restarted coordinator can pick up where it was. A VM left half
made by an import that died (agent restart), or cut off mid-create (PVE restarted, its
worker killed: ``lock: create``, proven ours by the VM journal), is destroyed and made again.

An import has a deadline scaled by its image's size (import_timeout, import_seconds_per_gib)
and can be canceled; either stops its PVE task. However it fails, it ends ``failed`` with
the reason, its unfinished VM removed: never left ``running``.

A PVE that does not answer (shared/pve_outage.py) is waited out: the import tries again with
backoff until its deadline, and a failure then says what was retried. A PVE that says no
(bad parameters, a bad image, a full storage) fails the import at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.pve import NodePve, PveCallError
from agent.pve_ops import OpFailed, PveOp, PveOps, limit_reached
from agent.pve_tasks import TaskFailed, TaskLimit, WaitEnded, active_task, run_task, storage_full, wait_task
from agent.staging import BadStagedName, Staging
from agent.vm_journal import VmJournal, marker, owner_key
from agent.vms import destroy, vm_config
from shared.deadlines import scaled_timeout
from shared.error_slugs import ImportErrorKind
from shared.messages.imports import ImportRequest, ImportView
from shared.pve_outage import transient_reason

log = logging.getLogger(__name__)
DISK_KEY = "scsi0"


@dataclass
class ImportOp(PveOp[ImportRequest]):
    volume_id: str | None = None
    # PVE was asked to create the VM: after a lost answer its task may still be running.
    create_sent: bool = False

    def view(self) -> ImportView:
        return ImportView(**self.seen(), volume_id=self.volume_id)


class ImportFailed(OpFailed):
    pass


def disk_volume(config: dict[str, Any]) -> str:
    """'local-lvm:base-9000-disk-0,size=2G' -> 'local-lvm:base-9000-disk-0'."""
    return str(config.get(DISK_KEY, "")).split(",")[0]


class Importer(PveOps[ImportOp]):
    what = "import"

    def __init__(
        self,
        pve: NodePve,
        staging: Staging,
        journal: VmJournal,
        timeout: float,
        seconds_per_gib: float,
        landed: Callable[[str, int, str], None] = lambda _name, _vmid, _volume: None,
    ) -> None:
        super().__init__()
        # (staged name, VMID, disk volume) of each import done: its seed index is recorded
        # (agent/transfer/imported_seeds.py).
        self.landed = landed
        self.pve = pve
        self.staging = staging
        self.journal = journal
        self.timeout = timeout
        self.seconds_per_gib = seconds_per_gib

    def start(self, req: ImportRequest) -> ImportOp:
        op = self.ops.get(req.key)
        if op is not None and op.req.vmid == req.vmid and op.state != "failed":
            return op
        size = max(req.image_size, self._staged_size(req.staged_name))
        limit = TaskLimit(scaled_timeout(self.timeout, self.seconds_per_gib, size))
        return self._launch(ImportOp(req=req, limit=limit))

    def using(self) -> set[str]:
        """The staged images that running imports read."""
        return {op.req.staged_name for op in self.running()}

    def _staged_size(self, name: str) -> int:
        try:
            return self.staging.path(name).stat().st_size
        except (BadStagedName, OSError):
            return 0  # the import itself says what is wrong with it

    async def _work(self, op: ImportOp) -> None:
        await self._retrying(op, lambda: self._import(op), lambda: self._after_pause(op))
        self.journal.forget(op.vmid)  # its marker proves it ours from now on
        log.info("import %s: VM %s is a template (%s)", op.key, op.vmid, op.volume_id)
        if op.volume_id:
            self.landed(op.req.staged_name, op.vmid, op.volume_id)

    async def _after_pause(self, op: ImportOp) -> None:
        """Before another try: a create task that PVE may still run although its answer was lost."""
        if not op.create_sent:
            return
        try:
            running = await active_task(self.pve, op.req.vmid, "qmcreate")
            if running is not None:
                op.phase = "waiting for an earlier create task"
                await wait_task(self.pve, running, op.limit)
        except WaitEnded as exc:
            raise limit_reached(op, f"waiting for the create task of VM {op.req.vmid}", exc) from None
        except (PveCallError, TaskFailed):
            pass  # still away, or the task failed: the next try sees what is there

    async def _remove_half_made(self, op: ImportOp) -> None:
        """A failed import must not leave a VM behind that is not a template (PVE removes
        a VM whose create failed, but not one whose conversion to a template failed)."""
        op.phase = "removing the unfinished VM"
        try:
            if await destroy(self.pve, self.journal, op.req.vmid, op.req.key):
                log.info("import %s: removed the unfinished VM %s", op.req.key, op.req.vmid)
            else:  # PVE removes the VM of a create that failed or was stopped
                log.info("import %s: no unfinished VM %s left", op.req.key, op.req.vmid)
        except Exception as exc:  # noqa: BLE001 - the import's own failure is what gets reported
            # Still ours by its marker or the VM journal: a retry of the job, a cascade delete
            # or the coordinator's sweep removes it later.
            log.warning("import %s: unfinished VM %s not removed: %s", op.req.key, op.req.vmid, exc)
        op.phase = "failed"

    async def _import(self, op: ImportOp) -> None:
        if await self._found_template(op):
            return
        path = self._staged_path(op.req)
        await self._create_vm(op, path)
        await self._convert_to_template(op)

    async def _found_template(self, op: ImportOp) -> bool:
        """Whether VM ``vmid`` is already this import's template; a half-made VM of this
        import is destroyed first, someone else's fails the import (VMID taken)."""
        req = op.req
        existing = await vm_config(self.pve, req.vmid)
        if existing is None:
            # The VMID may be used on another node: PVE will refuse the create then.
            pass
        elif owner_key(existing, self.journal.get(req.vmid)) != req.key:
            raise ImportFailed(f"VM {req.vmid} already exists and is not ours", ImportErrorKind.VMID_TAKEN)
        elif int(existing.get("template", 0)) == 1:
            op.volume_id = disk_volume(existing)
            return True
        else:
            op.phase = "cleaning up an unfinished earlier attempt"
            await destroy(self.pve, self.journal, req.vmid, req.key)
        return False

    def _staged_path(self, req: ImportRequest) -> Path:
        try:
            path = self.staging.path(req.staged_name)
        except BadStagedName as exc:
            raise ImportFailed(str(exc), ImportErrorKind.BAD_REQUEST) from None
        if not path.exists():
            raise ImportFailed(
                f"staged image {req.staged_name} is not on this node", ImportErrorKind.MISSING_IMAGE
            )
        return path

    async def _create_vm(self, op: ImportOp, path: Path) -> None:
        """PVE's create task: the VM, its disk imported from the staged image at ``path``."""
        req, pve = op.req, self.pve
        params: dict[str, Any] = dict(req.options)
        params.update(
            vmid=req.vmid,
            name=req.name,
            description=(req.description + "\n\n" if req.description else "") + marker(req.key),
            **{DISK_KEY: f"{req.storage}:0,import-from={path}"},
        )
        op.phase = "importing disk"
        op.create_sent = True
        # On disk before PVE is asked: a create cut off before it writes our marker is still ours.
        self.journal.record(req.vmid, req.key)

        def on_progress(pct: float) -> None:
            op.progress = min(pct, 99.0)

        try:
            await run_task(
                pve,
                op.limit,
                "qmcreate",
                req.vmid,
                "create",
                f"nodes/{pve.node}/qemu",
                params,
                on_progress=on_progress,
            )
        except WaitEnded as exc:
            raise limit_reached(op, f"importing the disk of VM {req.vmid}", exc) from None
        except (PveCallError, TaskFailed) as exc:
            if "already exists" in str(exc):
                self.journal.forget(req.vmid)  # PVE refused: the VM there is someone else's
                raise ImportFailed(f"VMID {req.vmid} is taken: {exc}", ImportErrorKind.VMID_TAKEN) from None
            if isinstance(exc, PveCallError) or transient_reason(None, str(exc)):
                raise
            full = await storage_full(pve, exc, req.storage)
            if full is not None:
                raise ImportFailed(full, ImportErrorKind.NO_SPACE) from None
            raise ImportFailed(f"PVE could not create VM {req.vmid}: {exc}") from None

    async def _convert_to_template(self, op: ImportOp) -> None:
        req, pve = op.req, self.pve
        op.phase = "converting to template"
        try:
            await run_task(
                pve, op.limit, "qmtemplate", req.vmid, "create", f"nodes/{pve.node}/qemu/{req.vmid}/template"
            )
        except WaitEnded as exc:
            raise limit_reached(op, f"converting VM {req.vmid} to a template", exc) from None
        except TaskFailed as exc:
            if transient_reason(None, str(exc)):
                raise
            raise ImportFailed(f"PVE could not convert VM {req.vmid} to a template: {exc}") from None
        config = await vm_config(pve, req.vmid)
        if config is None or int(config.get("template", 0)) != 1:
            raise ImportFailed(f"VM {req.vmid} is not a template after conversion")
        op.volume_id = disk_volume(config)
