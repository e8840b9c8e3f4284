"""Deleting templates: soft (hidden, nothing removed) or cascade, a durable job.

A cascade removes every instance's VM through its agent, the stored images (the
upload's staged file on its import node, every copy a sync task received on its
target) and the rows. It starts by marking the template ``deleting`` (no new work
starts on it; it stays visible) and its ``template_deletion`` job running. The request
then makes a first attempt itself: when every part answers, the template is gone
before the answer. Whatever could not be removed (an agent down, PVE not answering or
failing) is recorded with the reason, and the job runner tries again until it is
done, also after a coordinator restart and on any replica (the job holds a lease).

An import that is queued or running is stopped: its upload fails ("template deleted
during its import") and its agent cancels the PVE task and removes the unfinished VM.
An upload still streaming in, or a sync task copying, makes the delete answer 409
before anything changes.

A job whose attempts keep raising unexpectedly (a bug, an agent answer it cannot read) is
given up by the job engine within the delete's limits (delete_max_errors,
delete_error_deadline): the deletion is then ``failed`` with the reason, and its template
stays ``deleting``, showing that deletion (no new work starts on a half-removed template,
and its remaining parts stay listed). Asking for the cascade again restarts it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.clones_in_pve import still_in_pve
from coordinator.db.models import (
    Agent,
    Clone,
    TemplateDeletion,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.types import utcnow
from coordinator.deletion_plan import IMPORT_STOPPED, IMPORT_STOPPING, NEEDS_PVE, Step, plan, retry_delay
from coordinator.errors import Conflict, CoordinatorError, not_found
from coordinator.jobs.imports import import_key
from coordinator.states import clone as clone_states
from coordinator.states import deletion as deletion_states
from coordinator.states import instance as instance_states
from coordinator.states import sync_task
from coordinator.states import template as template_states
from coordinator.states import upload as upload_states
from coordinator.states.clone import CloneStatus
from coordinator.states.deletion import DeletionStatus
from coordinator.states.template import TemplateStatus
from coordinator.states.upload import UploadStatus
from shared.error_slugs import ErrorSlug

log = logging.getLogger(__name__)
M = TypeVar("M")


def key_prefix(template_id: int) -> str:
    """Matches the marker of every VM made for this template (imports and syncs)."""
    return f"t{template_id}-"


def deleting_conflict(template_id: int) -> Conflict:
    return Conflict(
        ErrorSlug.TEMPLATE_DELETING,
        f"template {template_id} is being deleted; see its `deletion` for what is left and why",
    )


async def soft_delete(db: async_sessionmaker[AsyncSession], template_id: int, actor: str) -> None:
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        if template is None or template.status == TemplateStatus.DELETED:
            raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, template_id)
        if not await template_states.soft_delete(session, template_id, actor):
            raise deleting_conflict(template_id)  # (the only other status a template has)
        await session.commit()


@dataclass(frozen=True)
class Started:
    deletion_id: int
    # This request owns the job's lease now; False: the delete was under way already.
    claimed: bool


async def start_cascade(
    db: async_sessionmaker[AsyncSession],
    template_id: int,
    actor: str,
    lease: float,
    in_pve: Callable[[int], Awaitable[set[int]]] | None = None,
) -> Started:
    """Mark the template deleting and its job running, leased to this process; or find the
    deletion under way. NotFound/Conflict (nothing changed) when it cannot start.
    ``in_pve(cluster_id)``: the VMIDs PVE holds (a linked clone removed in PVE no longer
    keeps its template)."""
    await refuse_linked_clones(db, template_id, in_pve)
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        if template is None:
            raise not_found(ErrorSlug.TEMPLATE_NOT_FOUND, template_id)
        if template.status != TemplateStatus.DELETING:
            await refuse_under_running_work(session, template_id)
        # Conditional: of concurrent requests exactly one starts the job (the others find it).
        if not await template_states.start_deleting(session, template_id, actor):
            await session.rollback()
            deletion_id = await session.scalar(
                select(TemplateDeletion.id).where(TemplateDeletion.template_id == template_id)
            )
            assert deletion_id is not None  # made in the same transaction as the flip
            claimed = await deletion_states.restart_failed(session, deletion_id, actor, lease)
            await session.commit()
            return Started(deletion_id, claimed=claimed)
        await sync_task.cancel_pending_of_template(session, template_id)
        # Its import job sees this and stops; the deletion's first step tells the agent.
        await upload_states.stop_imports_of_template(session, template_id, IMPORT_STOPPING)
        deletion_id = await deletion_states.start(session, template_id, actor, lease)
        await session.commit()
        return Started(deletion_id, claimed=True)


def _named(template_id: int, version: int | None) -> str:
    """How a refusal names what is deleted: the template, or one version of it."""
    return f"template {template_id}" if version is None else f"version {version} of template {template_id}"


async def refuse_under_running_work(
    session: AsyncSession, template_id: int, version: int | None = None
) -> None:
    """409 while an upload of the template (or of that version) streams in, a sync task of it
    copies or imports, or a clone of it is made."""
    uploads = [TemplateUpload.template_id == template_id, TemplateUpload.status == UploadStatus.UPLOADING]
    tasks = [TemplateSyncTask.template_id == template_id, TemplateSyncTask.status.in_(sync_task.RUNNING)]
    clones = [Clone.template_id == template_id, Clone.status.in_(clone_states.ACTIVE)]
    if version is not None:
        uploads.append(TemplateUpload.version == version)
        tasks.append(TemplateSyncTask.version == version)
        clones.append(Clone.version == version)
    uploading = await session.scalar(select(TemplateUpload.id).where(*uploads))
    if uploading is not None:
        raise Conflict(
            ErrorSlug.UPLOAD_RUNNING,
            f"{_named(template_id, version)} is being uploaded (upload {uploading}); retry when it is "
            f"stored (a resumable one waiting for its bytes goes with DELETE /api/v1/uploads/{uploading})",
        )
    running = await session.scalar(select(TemplateSyncTask.id).where(*tasks))
    if running is not None:
        raise Conflict(
            ErrorSlug.SYNC_RUNNING,
            f"sync task {running} of {_named(template_id, version)} is running; cancel it or wait",
        )
    cloning = await session.scalar(select(Clone.id).where(*clones))
    if cloning is not None:
        raise Conflict(
            ErrorSlug.CLONE_RUNNING,
            f"clone {cloning} of {_named(template_id, version)} is under way; wait for it to end",
        )


async def refuse_linked_clones(
    db: async_sessionmaker[AsyncSession],
    template_id: int,
    in_pve: Callable[[int], Awaitable[set[int]]] | None,
    version: int | None = None,
) -> None:
    """409 naming the linked clones that still use the template's base disks (those of
    ``version`` only, if given): PVE refuses to remove a base volume a linked clone is made
    from (its storage's `volume is used by other VMs` check), and so do we, before anything
    changes. A clone whose VM is gone from PVE (an administrator destroyed it) no longer
    counts; a PVE that does not answer, all do."""
    where = [Clone.template_id == template_id, Clone.linked.is_(True), Clone.status == CloneStatus.COMPLETED]
    if version is not None:
        where.append(Clone.version == version)
    async with db() as session:
        clones = list(await session.scalars(select(Clone).where(*where).order_by(Clone.id)))
    left = await still_in_pve(clones, in_pve, f"template {template_id}'s linked clones")
    if not left:
        return
    named = ", ".join(f"clone {c.id} (VM {c.vmid} {c.name!r} on {c.node_name})" for c in left[:20])
    more = f" and {len(left) - 20} more" if len(left) > 20 else ""
    raise Conflict(
        ErrorSlug.HAS_LINKED_CLONES,
        f"{_named(template_id, version)} has linked clones that use its disks: {named}{more}; "
        "destroy those VMs first (PVE refuses to remove a base volume a linked clone uses)",
        {
            "clones": [
                {"clone_id": c.id, "vmid": c.vmid, "name": c.name, "node_name": c.node_name} for c in left
            ]
        },
    )


async def _running_sync(session: AsyncSession, template_id: int) -> int | None:
    return await session.scalar(
        select(TemplateSyncTask.id).where(
            TemplateSyncTask.template_id == template_id,
            TemplateSyncTask.status.in_(sync_task.RUNNING),
        )
    )


@dataclass
class Outcome:
    done: bool
    removed_vms: list[dict[str, object]] = field(default_factory=list)
    removed_images: int = 0


class PartFailed(CoordinatorError):
    """A step could not be done now. ``asked``: a part answered with an error (else the
    step only waits for an agent or PVE to come back)."""

    def __init__(self, reason: str, asked: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.asked = asked


class DeleteJobs:
    """Attempts of cascade deletes: every step that can be done now, the rest recorded."""

    def __init__(self, db: async_sessionmaker[AsyncSession], agents: AgentLinks) -> None:
        self.db = db
        self.agents = agents

    async def run(self, deletion_id: int) -> None:
        """The job runner's handler."""
        await self.attempt(deletion_id)

    async def give_up(self, deletion_id: int, reason: str) -> None:
        """The job engine's verdict on attempts that kept raising: the deletion fails, its
        template stays `deleting` and shows why (see the module's docstring)."""
        async with self.db() as session:
            message = f"{reason}; ask for the cascade delete again to retry"
            if not await deletion_states.give_up(session, deletion_id, message):
                return
            await session.commit()
            template_id = await session.scalar(
                select(TemplateDeletion.template_id).where(TemplateDeletion.id == deletion_id)
            )
        log.warning("template %s: cascade delete failed: %s", template_id, reason)

    async def attempt(self, deletion_id: int) -> Outcome:
        """Every step that can be done now; the rest recorded with the reason, or the
        template deleted when nothing is left."""
        prepared = await self._prepare(deletion_id)
        if prepared is None:
            return Outcome(done=True)
        template_id, steps = prepared
        if steps is None:
            return Outcome(done=False)  # waiting for a running sync task
        outcome = Outcome(done=False)
        left, reasons, asked = await self.do_steps(template_id, steps, outcome)
        if left:
            reason = "; ".join(reasons)
            if await self._postpone(deletion_id, left, reason, asked):
                log.info("template %s: deletion waits: %s", template_id, reason)
            return outcome
        await self._finish(deletion_id, template_id)
        log.info(
            "template %s deleted with %d VM(s) and %d staged image(s)",
            template_id,
            len(outcome.removed_vms),
            outcome.removed_images,
        )
        outcome.done = True
        return outcome

    async def _prepare(self, deletion_id: int) -> tuple[int, list[Step] | None] | None:
        """The template and the steps still to do: None when the deletion is not running;
        no steps (None) while a sync task that started before the delete runs."""
        async with self.db() as session:
            deletion = await session.get(TemplateDeletion, deletion_id)
            if deletion is None or deletion.status != DeletionStatus.RUNNING:
                return None
            template_id = deletion.template_id
            await sync_task.cancel_pending_of_template(session, template_id)  # one may have slipped in
            await session.commit()
            running = await _running_sync(session, template_id)
            if running is not None:
                # Started just before the delete did: it ends on its own (completed or failed).
                reason = f"waiting for sync task {running}, started before the delete, to end"
                if await self._postpone(deletion_id, [], reason, asked=False):
                    log.info("template %s: deletion waits: %s", template_id, reason)
                return template_id, None
            steps = plan(
                await session.scalars(
                    select(TemplateInstance).where(TemplateInstance.template_id == template_id)
                ),
                await session.scalars(
                    select(TemplateUpload).where(TemplateUpload.template_id == template_id)
                ),
                await session.scalars(
                    select(TemplateSyncTask).where(TemplateSyncTask.template_id == template_id)
                ),
            )
        return template_id, steps

    async def do_steps(
        self, template_id: int, steps: list[Step], outcome: Outcome
    ) -> tuple[list[Step], dict[str, None], bool]:
        """Do the steps (a whole template's, or one version's: coordinator/version_delete.py);
        those left, the reasons (in order, without repeats), and whether a part answered with
        an error (else they only wait for an agent or PVE)."""
        left: list[Step] = []
        reasons: dict[str, None] = {}
        asked = False
        blocked: set[int] = set()
        for step in steps:
            if step.node_id in blocked:
                left.append(step)
                continue
            try:
                await self._do(template_id, step, outcome)
            except PartFailed as exc:
                left.append(step)
                reasons[exc.reason] = None
                asked = asked or exc.asked
                if step.blocks_its_node or not exc.asked:
                    blocked.add(step.node_id)  # the same reason holds for its other steps
        return left, reasons, asked

    async def _do(self, template_id: int, step: Step, outcome: Outcome) -> None:
        agent = await self._usable_agent(step)
        if step.kind == "stop_import":
            await self._stop_import(agent, template_id, step)
        elif step.kind == "vm":
            await self._remove_vm(agent, template_id, step, outcome)
        elif step.kind in ("failed_import_vm", "failed_sync_vm"):
            await self._remove_failed_vm(agent, template_id, step, outcome)
        elif step.kind == "staged_image":
            staged = await _call(step, agent.delete_staged(step.staged_name))
            await self._write(
                update(TemplateUpload).where(TemplateUpload.id == step.ref).values(staged_name="")
            )
            outcome.removed_images += int(staged is not None and staged.removed)
        else:
            copy = await _call(step, agent.remove_receive(step.ref, step.task_uid))
            # Its copy is gone: the task has nothing left to remove (the rows go at the end anyway).
            await self._write(delete(TemplateSyncTask).where(TemplateSyncTask.id == step.ref))
            outcome.removed_images += int(copy is not None and copy.removed)
        log.info("template %s: %s: done", template_id, step.describe())

    async def _stop_import(self, agent: AgentClient, template_id: int, step: Step) -> None:
        await _call(step, agent.cancel_import(import_key(template_id, step.ref), "template deleted"), {404})
        await self._write(
            update(TemplateUpload)
            .where(TemplateUpload.id == step.ref, TemplateUpload.error_message == IMPORT_STOPPING)
            .values(error_message=IMPORT_STOPPED)
        )

    async def _remove_vm(self, agent: AgentClient, template_id: int, step: Step, outcome: Outcome) -> None:
        """An instance's VM; a shared one is every node's view of it, and they go together."""
        assert step.vmid is not None
        answer = await _call(step, agent.delete_vm(step.vmid, key_prefix(template_id)))
        async with self.db() as session:
            instance = await session.get(TemplateInstance, step.ref)
            assert instance is not None
            done = [instance.id]
            if instance.is_shared:
                done = list(
                    await session.scalars(
                        select(TemplateInstance.id).where(
                            TemplateInstance.template_id == template_id,
                            TemplateInstance.is_shared.is_(True),
                            TemplateInstance.vmid == step.vmid,
                        )
                    )
                )
            await instance_states.mark_deleted(session, done)
            await session.commit()
        outcome.removed_vms.append(
            {"node_name": step.node_name, "vmid": step.vmid, "existed": bool(answer and answer.removed)}
        )

    async def _remove_failed_vm(
        self, agent: AgentClient, template_id: int, step: Step, outcome: Outcome
    ) -> None:
        """What a failed import or sync may have left of its VM."""
        assert step.vmid is not None
        # not_ours: the import failed before creating its VM, and the VMID is someone else's now.
        answer = await _call(step, agent.delete_vm(step.vmid, key_prefix(template_id)), {409})
        # The record no longer points at a VM: a later attempt does not look for it again.
        model = TemplateUpload if step.kind == "failed_import_vm" else TemplateSyncTask
        await self._write(update(model).where(model.id == step.ref).values(vmid=None))
        if answer is not None and answer.removed:
            outcome.removed_vms.append({"node_name": step.node_name, "vmid": step.vmid, "existed": True})

    async def _usable_agent(self, step: Step) -> AgentClient:
        try:
            agent = await self.agents.for_node(step.node_id)
        except NoLiveAgent as exc:
            raise PartFailed(f"waiting for the agent of {step.node_name} ({exc})", asked=False) from None
        if step.kind in NEEDS_PVE:
            async with self.db() as session:
                row = (
                    await session.execute(
                        select(Agent.pve_ok, Agent.pve_error).where(Agent.node_id == step.node_id)
                    )
                ).first()
            if row is not None and not row.pve_ok:
                said = f": {row.pve_error}" if row.pve_error else ""
                raise PartFailed(
                    f"waiting for PVE on {step.node_name} (its agent reports it does not answer{said})",
                    asked=False,
                )
        return agent

    async def _write(self, statement: Any) -> None:
        async with self.db() as session:
            await session.execute(statement.execution_options(synchronize_session=False))
            await session.commit()

    async def _postpone(self, deletion_id: int, left: list[Step], reason: str, asked: bool) -> bool:
        """Record what is left and why, and when to look again; whether the reason is new
        (a wait of hours logs one line, not one every look)."""
        async with self.db() as session:
            deletion = await session.get(TemplateDeletion, deletion_id)
            assert deletion is not None
            attempts = deletion.attempts + int(asked)
            delay = retry_delay(attempts, asked)
            new = deletion.reason != reason
            deletion.attempts = attempts
            deletion.remaining = json.dumps([s.shown() for s in left])
            deletion.reason = reason
            deletion.next_attempt_at = utcnow() + timedelta(seconds=delay)
            await session.commit()
        return new

    async def _finish(self, deletion_id: int, template_id: int) -> None:
        async with self.db() as session:
            await session.execute(delete(TemplateSyncTask).where(TemplateSyncTask.template_id == template_id))
            await session.execute(delete(TemplateInstance).where(TemplateInstance.template_id == template_id))
            await template_states.deleted(session, template_id)
            await deletion_states.done(session, deletion_id)
            await session.commit()


async def _call(
    step: Step, request: Awaitable[M], harmless: frozenset[int] | set[int] = frozenset()
) -> M | None:
    """Await an agent request for ``step``; its failure as PartFailed. An error whose status
    is in ``harmless`` counts as done (the answer is then None)."""
    try:
        answer = await request
    except AgentUnreachable as exc:
        raise PartFailed(f"{step.describe()}: the agent did not answer ({exc})", asked=True) from None
    except AgentError as exc:
        if exc.status in harmless:
            return None
        raise PartFailed(f"{step.describe()} failed: {exc.message}", asked=True) from None
    return answer
