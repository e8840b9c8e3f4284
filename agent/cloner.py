"""Cloning one of our templates into a new VM on this node (or, from a template on shared
storage, onto ``target_node``): PVE's ``POST /nodes/{node}/qemu/{source}/clone`` followed by
its task (progress from the task log: a full clone copies with qemu-img, which logs
``transferred ... (25.00%)``), then the clone's own options set with one config PUT. Clones
are keyed (``c<clone id>``): asking again with the same key returns the running or finished
clone, so a restarted coordinator picks up where it was, as imports do (agent/importer.py).

Only our templates are cloned: the source must be on this node, a template, and carry an
import's marker (``[pvesphere t..-..]``, agent/vm_journal.py). Nothing else is touched.

Ownership: who may remove what, while a clone is made and after.

* PVE copies the source's description into the clone unless the clone call brings a
  non-empty one (API2/Qemu.pm clone_vm: ``if ($param->{description})``). Our templates'
  description carries their import's marker, which our cascade delete (``t<id>-``) and the
  sweep (``t``) take as theirs: so the clone call always brings a description, the user's
  plus the clone's own marker ``[pvesphere c<N>]``. No template key prefix covers a clone key
  (vm_journal.belongs), so neither a cascade delete nor the sweep ever takes a clone.
* While PVE works, the new VM is a temporary config at ``lock: clone`` (no description yet:
  PVE writes the new config only once the first disk is cloned). The VMID is in the VM journal
  before PVE is asked, so a clone cut off there (agent or PVE restarted) is ours by the
  journal; from the first disk on, by the marker as well.
* A clone that fails or is canceled is removed here (its task stopped; PVE frees the disks of
  a clone that failed, and we destroy what is left, e.g. a VM whose options PUT failed), before
  the op reads ``failed``. A VMID someone else holds (PVE: "config file already exists") is
  ``vmid_taken`` and never touched.
* An agent restarted mid-clone forgets the op; the coordinator asks again with the same key,
  and the VM it finds at that VMID (marker ``c<N>``, or ``lock: clone`` and the journal) is
  destroyed and made again.
* A finished clone is the user's VM: its options set, the journal entry turns ``done``, then
  the marker is removed from its description (one more PUT). From then on no key prefix matches
  it: ``DELETE /v1/vms/{vmid}?key_prefix=c<N>`` answers ``not_ours``. The ``done`` entry
  vouches for nothing (vm_journal.owner_key); it is kept a day (DONE_KEEP_SECONDS) only so that
  the same key asked again after an agent restart hears ``done`` instead of ``vmid_taken``
  (when the VM there still has the clone's name). Killed between the two PUTs, the VM still
  has the marker: asked again, it is made again.

A clone's deadline is import_timeout plus import_seconds_per_gib for the template's size
(a full clone copies the whole disk); it can be canceled. A PVE that does not answer is
waited out as for imports (shared/pve_outage.py): each try first looks at what exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentFault
from agent.importer import DISK_KEY
from agent.pve import NodePve, PveCallError
from agent.pve_ops import OpFailed, PveOp, PveOps, limit_reached
from agent.pve_tasks import TaskFailed, TaskLimit, WaitEnded, run_task, storage_full
from agent.vm_journal import MARKER, VmJournal, is_template_key, marker, owner_key
from agent.vms import destroy, vm_config
from shared.deadlines import scaled_timeout
from shared.error_slugs import ImportErrorKind
from shared.messages.clones import CloneRequest, CloneView
from shared.pve_outage import transient_reason
from shared.vm_config import check_volumes

log = logging.getLogger(__name__)


class CloneFailed(OpFailed):
    pass


class CloneBusy(AgentFault):
    """The key is running for another VMID."""


def refusal(req: CloneRequest) -> str | None:
    """Why a request that parsed cannot be taken at all (a 400), or None."""
    if MARKER.search(req.description):
        return "description must not contain a pvesphere marker ([pvesphere ...]): it would claim the VM"
    if req.vmid == req.source_vmid:
        return "vmid must differ from source_vmid"
    if req.target_storage is not None and not req.full:
        return "target_storage is only for full clones (a linked clone stays on the template's storage)"
    return None


@dataclass
class CloneOp(PveOp[CloneRequest]):
    node: str  # where the clone is (and ends): this node, or the request's target_node
    # PVE's clone task ended OK in this op: a later try resumes with the options.
    cloned: bool = False
    # PVE was asked to clone (the VMID journaled): a failure has something to remove.
    clone_sent: bool = False

    def view(self) -> CloneView:
        return CloneView(**self.seen(), linked=not self.req.full)


class Cloner(PveOps[CloneOp]):
    what = "clone"

    def __init__(self, pve: NodePve, journal: VmJournal, timeout: float, seconds_per_gib: float) -> None:
        super().__init__()
        self.pve = pve
        self.journal = journal
        self.timeout = timeout
        self.seconds_per_gib = seconds_per_gib

    def start(self, req: CloneRequest) -> CloneOp:
        op = self.ops.get(req.key)
        if op is not None and op.state == "running" and op.req.vmid != req.vmid:
            raise CloneBusy(f"clone {req.key} is running for VM {op.req.vmid}, not {req.vmid}")
        if op is not None and op.req.vmid == req.vmid and op.state != "failed":
            return op
        limit = TaskLimit(scaled_timeout(self.timeout, self.seconds_per_gib, req.image_size))
        return self._launch(CloneOp(req=req, node=req.target_node or self.pve.node, limit=limit))

    async def _work(self, op: CloneOp) -> None:
        await self._retrying(op, lambda: self._clone(op), _nothing)
        req = op.req
        log.info("clone %s: VM %s on %s cloned from %s", req.key, req.vmid, op.node, req.source_vmid)

    async def _remove_half_made(self, op: CloneOp) -> None:
        """A failed clone leaves no VM: here (where PVE makes it, at ``lock: clone``: ours by
        the journal, looked at first) and on the target node (where PVE moves it at the end:
        ours by its marker)."""
        if not op.clone_sent:
            return  # refused before PVE was asked: nothing was made
        op.phase = "removing the unfinished VM"
        req = op.req
        for node in dict.fromkeys((self.pve.node, op.node)):
            try:
                done = await destroy(
                    self.pve, self.journal, req.vmid, req.key, node=node, clone_source=req.source_vmid
                )
                if done is not None:
                    log.info("clone %s: removed the unfinished VM %s on %s", req.key, req.vmid, node)
            except Exception as exc:  # noqa: BLE001 - the clone's own failure is what gets reported
                # Still ours by its marker or the journal: a retry of the same key removes it.
                log.warning("clone %s: unfinished VM %s on %s not removed: %s", req.key, req.vmid, node, exc)
        op.phase = "failed"

    async def _clone(self, op: CloneOp) -> None:
        """One try: check the source, look at what is at the VMID, clone, set the options."""
        source = await self._our_template(op.req)
        storage = op.req.target_storage or volume_storage(source)
        try:
            check_volumes(op.req.options, storage)
        except ValueError as exc:
            raise CloneFailed(str(exc), ImportErrorKind.BAD_REQUEST) from None
        if await self._finished_earlier(op):
            return
        if not op.cloned:
            await self._run_clone(op, storage)
            op.cloned = True
        await self._set_options(op)

    async def _our_template(self, req: CloneRequest) -> dict[str, Any]:
        """The source's config, if it is one of our templates on this node."""
        config = await vm_config(self.pve, req.source_vmid)
        if config is None:
            raise CloneFailed(
                f"VM {req.source_vmid} is not on {self.pve.node}: nothing to clone",
                ImportErrorKind.BAD_REQUEST,
            )
        key = owner_key(config, None)
        if int(config.get("template", 0)) != 1 or key is None or not is_template_key(key):
            raise CloneFailed(
                f"VM {req.source_vmid} on {self.pve.node} is not a pvesphere template; not cloning it",
                ImportErrorKind.BAD_REQUEST,
            )
        return config

    async def _finished_earlier(self, op: CloneOp) -> bool:
        """Whether VM ``vmid`` is already this clone, finished; a half-made one of this clone
        is destroyed first, someone else's fails the clone (VMID taken)."""
        req = op.req
        existing = await vm_config(self.pve, req.vmid, op.node)
        if existing is None and op.node != self.pve.node:
            # cut off before PVE moved it to the target node
            existing = await vm_config(self.pve, req.vmid)
            where = self.pve.node
        else:
            where = op.node
        entry = self.journal.get(req.vmid)
        if existing is None:
            op.cloned = False
            return False
        key = owner_key(existing, entry)
        if key is None and entry is not None and entry.done and entry.key == req.key:
            if existing.get("name") == req.name and existing.get("lock") is None:
                op.phase = "finished earlier"
                return True
        if key != req.key:
            raise CloneFailed(f"VM {req.vmid} already exists and is not ours", ImportErrorKind.VMID_TAKEN)
        if op.cloned and existing.get("lock") is None:
            return False  # PVE's clone is done; the options are set (again) next
        op.phase = "cleaning up an unfinished earlier attempt"
        op.cloned = False
        await destroy(self.pve, self.journal, req.vmid, req.key, node=where, clone_source=req.source_vmid)
        return False

    async def _run_clone(self, op: CloneOp, storage: str) -> None:
        req, pve = op.req, self.pve
        params: dict[str, Any] = {
            "newid": req.vmid,
            "name": req.name,
            "full": 1 if req.full else 0,
            # never empty: PVE would copy the template's description, marker and all
            "description": (req.description + "\n\n" if req.description else "") + marker(req.key),
        }
        if req.full and req.target_storage:
            params["storage"] = req.target_storage
        if req.target_node and req.target_node != pve.node:
            params["target"] = req.target_node
        op.phase = "cloning" if req.full else "linking"
        op.progress = 0.0
        # On disk before PVE is asked: a clone cut off before PVE writes our marker is still ours.
        self.journal.record(req.vmid, req.key)
        op.clone_sent = True

        def on_progress(pct: float) -> None:
            op.progress = min(pct, 99.0)

        try:
            await run_task(
                pve,
                op.limit,
                "qmclone",
                req.source_vmid,
                "create",
                f"nodes/{pve.node}/qemu/{req.source_vmid}/clone",
                params,
                on_progress=on_progress,
                # PVE names the task after the source: this tells it from a sibling clone's
                first_line=f"creating a clone of VM {req.source_vmid} with ID {req.vmid}",
            )
        except WaitEnded as exc:
            raise limit_reached(op, f"cloning VM {req.source_vmid} to {req.vmid}", exc) from None
        except (PveCallError, TaskFailed) as exc:
            if "already exists" in str(exc):
                self.journal.forget(req.vmid)  # PVE refused: the VM there is someone else's
                raise CloneFailed(f"VMID {req.vmid} is taken: {exc}", ImportErrorKind.VMID_TAKEN) from None
            if transient_reason(getattr(exc, "status", None), str(exc)):
                raise
            if isinstance(exc, TaskFailed):
                full = await storage_full(pve, exc, storage)
                if full is not None:
                    raise CloneFailed(full, ImportErrorKind.NO_SPACE) from None
            raise CloneFailed(f"PVE could not clone VM {req.source_vmid} to {req.vmid}: {exc}") from None

    async def _set_options(self, op: CloneOp) -> None:
        """The clone's own options, then its marker removed: from then on it is the user's."""
        req, pve = op.req, self.pve
        path = f"nodes/{op.node}/qemu/{req.vmid}/config"
        options = {k: v for k, v in req.options.items() if k != "name"}  # the request names it
        op.phase = "setting options"
        if options:
            try:
                await pve.call("put", path, **options)
            except PveCallError as exc:
                if transient_reason(exc.status, str(exc)):
                    raise
                raise CloneFailed(
                    f"PVE refused the clone's options: {exc}", ImportErrorKind.PVE_ERROR
                ) from None
        self.journal.finished_clone(req.vmid, req.key)
        op.phase = "handing over"
        if req.description:
            await pve.call("put", path, description=req.description)
        else:
            await pve.call("put", path, delete="description")


def volume_storage(config: dict[str, Any]) -> str:
    """'local-lvm:base-9000-disk-0,size=2G' -> 'local-lvm': where a clone's new volumes go."""
    return str(config.get(DISK_KEY, "")).split(":", 1)[0]


async def _nothing() -> None:
    """Between a clone's tries: nothing to wait for (each try looks at what is there first)."""
