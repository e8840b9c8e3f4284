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

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentFault
from agent.pve import NodePve, PveCallError
from agent.pve_tasks import (
    STOP_GRACE,
    TaskFailed,
    TaskLimit,
    WaitEnded,
    active_task,
    run_task,
    storage_full,
    wait_task,
)
from agent.staging import BadStagedName, Staging
from agent.vm_journal import VmJournal, marker, owner_key
from agent.vms import DESTROY_SECONDS, destroy, vm_config
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ImportErrorKind
from shared.messages.imports import ImportRequest, ImportState, ImportView
from shared.pve_outage import Retries, transient_reason

log = logging.getLogger(__name__)
DISK_KEY = "scsi0"
# A canceled import ends within this: its task stopped, then its unfinished VM destroyed.
CANCEL_WAIT = STOP_GRACE + DESTROY_SECONDS
# How soon a pause between tries notices a cancel.
PAUSE_STEP = 0.25


@dataclass
class ImportOp:
    req: ImportRequest
    limit: TaskLimit = field(repr=False)
    state: ImportState = "running"  # running -> done | failed
    phase: str = "starting"
    progress: float = 0.0
    error: str | None = None
    # vmid_taken: pick another VMID and ask again; timeout, canceled: its limit was reached
    error_kind: ImportErrorKind | None = None
    volume_id: str | None = None
    # PVE was asked to create the VM: after a lost answer its task may still be running.
    create_sent: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> ImportView:
        return ImportView(
            key=self.req.key,
            vmid=self.req.vmid,
            state=self.state,
            phase=self.phase,
            progress=round(self.progress, 2),
            error=self.error,
            error_kind=self.error_kind,
            volume_id=self.volume_id,
        )


class ImportFailed(AgentFault):
    def __init__(self, message: str, kind: ImportErrorKind = ImportErrorKind.PVE_ERROR) -> None:
        super().__init__(message)
        self.kind = kind


def disk_volume(config: dict[str, Any]) -> str:
    """'local-lvm:base-9000-disk-0,size=2G' -> 'local-lvm:base-9000-disk-0'."""
    return str(config.get(DISK_KEY, "")).split(",")[0]


def limit_reached(op: ImportOp, doing: str, exc: WaitEnded) -> ImportFailed:
    """The failure of an import whose wait on PVE reached its deadline or was canceled."""
    if op.limit.canceled is not None:
        return ImportFailed(str(exc), ImportErrorKind.CANCELED)
    if not exc.stopped:
        return ImportFailed(f"{doing} {exc}; its PVE task did not stop when asked", ImportErrorKind.TIMEOUT)
    return ImportFailed(f"{doing} {exc}; its PVE task was stopped", ImportErrorKind.TIMEOUT)


class Importer:
    def __init__(
        self, pve: NodePve, staging: Staging, journal: VmJournal, timeout: float, seconds_per_gib: float
    ) -> None:
        self.pve = pve
        self.staging = staging
        self.journal = journal
        self.timeout = timeout
        self.seconds_per_gib = seconds_per_gib
        self.ops: dict[str, ImportOp] = {}
        self.stopping = False

    def start(self, req: ImportRequest) -> ImportOp:
        op = self.ops.get(req.key)
        if op is not None and op.req.vmid == req.vmid and op.state != "failed":
            return op
        size = max(req.image_size, self._staged_size(req.staged_name))
        op = ImportOp(req, TaskLimit(scaled_timeout(self.timeout, self.seconds_per_gib, size)))
        self.ops[req.key] = op
        op.task = asyncio.create_task(self._run(op), name=f"import-{req.key}")
        return op

    def using(self) -> set[str]:
        """The staged images that running imports read."""
        return {op.req.staged_name for op in self.ops.values() if op.state == "running"}

    def running_vmids(self) -> set[int]:
        """VMIDs an import of this agent is working on (its create may not have begun yet)."""
        return {op.req.vmid for op in self.ops.values() if op.state == "running"}

    def _staged_size(self, name: str) -> int:
        try:
            return self.staging.path(name).stat().st_size
        except (BadStagedName, OSError):
            return 0  # the import itself says what is wrong with it

    async def cancel(self, key: str, reason: str) -> ImportOp | None:
        """Stop a running import (its PVE task too) and wait until it has ended, its
        unfinished VM removed. A finished import is left as it is."""
        op = self.ops.get(key)
        if op is None:
            return None
        if op.state == "running" and op.task is not None:
            log.info("import %s: canceling (%s)", key, reason)
            op.limit.cancel(reason)
            await asyncio.wait({op.task}, timeout=CANCEL_WAIT)
        return op

    def running(self) -> list[ImportOp]:
        return [op for op in self.ops.values() if op.state == "running"]

    async def stop(self, wait: float) -> None:
        """The agent is stopping: end every running import as a cancel does (its PVE task
        stopped, its unfinished VM removed), within ``wait`` seconds. They end
        ``interrupted``: the coordinator asks for them again once the agent is back."""
        self.stopping = True
        tasks = {op.task for op in self.running() if op.task is not None}
        for op in self.running():
            op.limit.cancel("the agent is stopping")
        if tasks:
            await asyncio.wait(tasks, timeout=wait)

    async def _run(self, op: ImportOp) -> None:
        req = op.req
        try:
            await self._import_retrying(op)
            self.journal.forget(req.vmid)  # its marker proves it ours from now on
            op.state, op.phase, op.progress = "done", "done", 100.0
            log.info("import %s: VM %s is a template (%s)", req.key, req.vmid, op.volume_id)
            return
        except ImportFailed as exc:
            error, kind = str(exc), exc.kind
        except (PveCallError, TaskFailed) as exc:
            error, kind = str(exc), ImportErrorKind.PVE_ERROR
        except asyncio.CancelledError:
            op.state, op.error, op.error_kind = (
                "failed",
                "agent stopped during the import",
                ImportErrorKind.INTERRUPTED,
            )
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the import ends with it
            log.exception("import %s: unexpected error", req.key)
            error, kind = f"{exc.__class__.__name__}: {exc}", ImportErrorKind.AGENT_ERROR
        if self.stopping:
            kind = ImportErrorKind.INTERRUPTED  # not the import's fault: asked for again after the restart
        log.warning("import %s failed: %s", req.key, error)
        if kind != ImportErrorKind.VMID_TAKEN:  # a taken VMID is someone else's VM: never touch it
            await self._remove_half_made(op)
        # Failed only once the VM is gone: whoever reads "failed" may retry with this VMID.
        op.state, op.error, op.error_kind = "failed", error, kind

    async def _import_retrying(self, op: ImportOp) -> None:
        """The import, tried again with backoff while PVE does not answer and the import's
        limit allows. Each try starts by looking at what exists (``_import``), so a create
        whose answer was lost is neither repeated beside its VM nor taken for someone else's."""
        retries = Retries()
        while True:
            try:
                await self._import(op)
                if retries.count:
                    log.info("import %s: PVE answered again; done after %s", op.req.key, retries.summary())
                return
            except WaitEnded:
                raise
            except (PveCallError, TaskFailed) as exc:
                reason = transient_reason(getattr(exc, "status", None), str(exc))
                if reason is None:
                    raise
                delay = retries.failed(reason, str(exc), op.limit.deadline.remaining())
                if delay is None:
                    raise ImportFailed(
                        f"{retries.summary()}; no time left for another try within the import's "
                        f"deadline ({op.limit.deadline.seconds:.0f} s)",
                        ImportErrorKind.PVE_UNREACHABLE,
                    ) from None
            log.warning("import %s: %s; trying again in %.0f s", op.req.key, retries.summary(), delay)
            op.phase = f"waiting for PVE ({', '.join(retries.reasons)})"
            await self._pause(op, delay, retries)

    async def _pause(self, op: ImportOp, seconds: float, retries: Retries) -> None:
        """Wait ``seconds`` (ending early if the import is canceled or its deadline passes), then
        for a create task that PVE may still run although its answer was lost."""
        wait = Deadline(seconds)
        while not wait.passed():
            reason = op.limit.reached()
            if reason is not None:
                kind = ImportErrorKind.CANCELED if op.limit.canceled is not None else ImportErrorKind.TIMEOUT
                raise ImportFailed(f"{retries.summary()}; {reason}", kind)
            await asyncio.sleep(min(PAUSE_STEP, wait.remaining()))
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
