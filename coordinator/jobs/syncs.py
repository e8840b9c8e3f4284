"""Sync tasks: copy a local-storage template's image node to node, then import it there.

Where a sync task changes state::

    pending  --scheduler: chain formed, source agent told to send-->      syncing
    syncing  --the target verified the whole image (sha256)-->            importing
    importing --the target's VM is a template-->                          completed
    syncing/importing --error--> pending again after a backoff (the copy resumes from
                                 the bytes already verified at the target), or failed
                                 once sync_max_attempts are used up

Two loops. The *scheduler* (``SyncScheduler``) turns due pending tasks into transfer
chains within the per-node limits (sync_planner.py), claims them and starts each chain
on its source agent. Every syncing or importing task is then *watched* by a JobRunner
worker holding the task's lease (``SyncWatcher``): it reads the target agent's receive
state every second (bytes, rate) and drives the import once the copy is verified. A
coordinator restart loses nothing: agents keep streaming, the leases expire, and the
next coordinator's workers pick the tasks up where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable, AgentUntrusted
from coordinator import manifest_digests
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.agents.registry import AgentAddress, live_agents
from coordinator.config import CoordinatorConfig
from coordinator.db.models import (
    Agent,
    PveNode,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.types import utcnow
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.jobs.sync_planner import Chain, Copy, Due, Load, plan_chains
from coordinator.jobs.template_import import ImportOrder, drive_import, stop_agent_import
from coordinator.metrics import sender_of
from coordinator.shared_limits import SharedLimit
from coordinator.staging_release import forget_copy
from coordinator.states import sync_task
from coordinator.states.sync_task import SyncTaskStatus
from coordinator.states.template import TemplateStatus
from coordinator.states.upload import UploadStatus
from coordinator.sync_tasks import seeds_for, ticket_for
from shared.backoff import exponential
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.transfers import Hop, ManifestView, ReceiveView, Seed, TransferRequest
from shared.metrics import counter_step
from shared.tickets import TicketSigner

log = logging.getLogger(__name__)

# Share of `progress` for the copy; the import on the target fills the rest.
COPY_SHARE = 90
POLL_SECONDS = 1.0
# Bytes that stop moving in a running stream for this long: the attempt failed.
STALL_LIMIT = 90.0
BACKOFF_START = 2.0
# A source still busy with streams of failed attempts: ask it again after this long.
BUSY_WAIT = 2.0
BACKOFF_MAX = 60.0
# Errors where trying again the same way cannot help.
FINAL_KINDS = {ErrorSlug.NO_SPACE}


def import_key(template_id: int, task_id: int) -> str:
    return f"t{template_id}-s{task_id}"


def backoff(attempts: int) -> float:
    return exponential(attempts, BACKOFF_START, BACKOFF_MAX)


class SyncScheduler:
    """Starts due pending tasks as transfer chains; one round per second or on wake()."""

    def __init__(
        self,
        config: CoordinatorConfig,
        db: async_sessionmaker[AsyncSession],
        agents: AgentLinks,
        signer: TicketSigner,
        on_started: Callable[[], None],
        planner: SharedLimit,
    ) -> None:
        """``planner``: a limit of one, so that one replica at a time plans chains (the
        per-node limits count the transfers running: two planners at once could each start
        a node's last free one)."""
        self.config = config
        self.planner = planner
        self.db = db
        self.agents = agents
        self.signer = signer
        self.on_started = on_started
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.schedule_once()
            except Exception as exc:
                if unreachable(exc):
                    OUTAGE.failed("scheduling sync tasks", exc)
                else:
                    log.exception("sync scheduling failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def schedule_once(self) -> int:
        async with self._lock:
            async with self.db() as session:
                if not await self._due(session):
                    return 0  # the common round: nothing written, no turn taken
            turn = await self.planner.take("sync-planning")
            if turn is None:
                return 0  # another replica is planning: the next round (within a second) is ours
            try:
                return await self._plan_and_start()
            finally:
                await self.planner.give_back(turn)

    async def _plan_and_start(self) -> int:
        """Read the situation and start chains, with the planner's turn held."""
        async with self.db() as session:
            due, copies, live, load, agents = await self._situation(session)
        if not due:
            return 0
        await self._fail_sourceless(due, copies)
        chains = plan_chains(
            due,
            copies,
            set(live),
            load,
            self.config.max_inbound_per_node,
            self.config.max_outbound_per_node,
        )
        for chain in chains:
            await self._start(chain, agents)
        return len(chains)

    async def _due(self, session: AsyncSession) -> list[Due]:
        now = utcnow()
        rows = (
            await session.execute(
                select(TemplateSyncTask.id, TemplateSyncTask.upload_id, TemplateSyncTask.target_node_id)
                .join(TemplateUpload, TemplateUpload.id == TemplateSyncTask.upload_id)
                .join(VmTemplate, VmTemplate.id == TemplateSyncTask.template_id)
                .where(
                    TemplateSyncTask.status == SyncTaskStatus.PENDING,
                    (TemplateSyncTask.next_attempt_at.is_(None)) | (TemplateSyncTask.next_attempt_at <= now),
                    TemplateUpload.status == UploadStatus.IMPORTED,
                    VmTemplate.status == TemplateStatus.ACTIVE,
                )
            )
        ).all()
        return [Due(task_id, upload_id, node_id) for task_id, upload_id, node_id in rows]

    async def _situation(
        self, session: AsyncSession
    ) -> tuple[list[Due], list[Copy], list[int], Load, dict[int, AgentAddress]]:
        due = await self._due(session)
        if not due:
            return [], [], [], Load(), {}
        upload_ids = {d.upload_id for d in due}
        copies = [
            Copy(u.id, u.import_node_id, u.staged_name, True)
            for u in await session.scalars(select(TemplateUpload).where(TemplateUpload.id.in_(upload_ids)))
            if u.staged_name
        ]
        copies += [
            Copy(t.upload_id, t.target_node_id, t.staged_name, False)
            for t in await session.scalars(
                select(TemplateSyncTask).where(
                    TemplateSyncTask.upload_id.in_(upload_ids),
                    TemplateSyncTask.status == SyncTaskStatus.COMPLETED,
                    TemplateSyncTask.staged_name != "",
                )
            )
        ]
        load = Load()
        for source_id, target_id in (
            await session.execute(
                select(TemplateSyncTask.source_node_id, TemplateSyncTask.target_node_id).where(
                    TemplateSyncTask.status == SyncTaskStatus.SYNCING
                )
            )
        ).all():
            load.outbound[source_id] += 1
            load.inbound[target_id] += 1
        agents = await live_agents(session, timedelta(seconds=self.config.agent_timeout))
        return due, copies, list(agents), load, agents

    async def _fail_sourceless(self, due: list[Due], copies: list[Copy]) -> None:
        """Tasks of an image no node holds a staged copy of any more can never start:
        PVE's disk of the template is not exported back into an image (the last copy is
        never evicted, coordinator/staging_release.py: only a lost file ends here)."""
        held = {c.upload_id for c in copies}
        sourceless = [d for d in due if d.upload_id not in held]
        if not sourceless:
            return
        reason = (
            "no node holds a staged copy of the template's image any more, and PVE's disk is not "
            "exported back into an image: upload the image again"
        )
        async with self.db() as session:
            for d in sourceless:
                task = await session.get(TemplateSyncTask, d.task_id)
                if task is not None and await sync_task.fail(session, task, reason, epoch=None):
                    log.warning("sync task %s to %s failed: %s", task.id, task.target_node_name, reason)
            await session.commit()

    async def _start(self, chain: Chain, agents: dict[int, AgentAddress]) -> None:
        """Claim the chain's tasks, then hand the chain to its source agent."""
        # The copy's chunk manifest, which its tickets sign: the source builds it once, in
        # the background; meanwhile the chain is not claimed (as if the source were busy:
        # the next round, a second later, asks again, and no attempt is spent on waiting).
        async with self.db() as session:
            upload_sha256 = await session.scalar(
                select(TemplateUpload.sha256).where(TemplateUpload.id == chain.upload_id)
            )
        try:
            manifest: ManifestView | manifest_digests.NoManifest = await manifest_digests.ask(
                self.agents,
                chain.source.node_id,
                chain.source.staged_name,
                (chain.upload_id, upload_sha256 or ""),
            )
        except manifest_digests.NoManifest as exc:
            if exc.building:
                log.info("sync of upload %s from %s: %s; waiting", chain.upload_id, chain.source.node_id, exc)
                return
            manifest = exc
        upload, names, claimed = await self._claim_chain(chain)
        if not claimed:
            return
        route = " -> ".join([names.get(chain.source.node_id, "?"), *[t.target_node_name for t in claimed]])
        if isinstance(manifest, manifest_digests.NoManifest):
            if manifest.cause is not None:  # as if it had refused the transfer (busy, copy gone)
                await self._not_started(chain, claimed, route, manifest.cause)
            else:
                await self._no_manifest(claimed, route, manifest)
            return
        transfer_id = f"x{claimed[0].id}-{claimed[0].epoch}-{secrets.token_hex(3)}"
        source = self.agents.client(agents[chain.source.node_id])
        async with self.db() as session:
            seeds = {t.id: await seeds_for(session, t) for t in claimed}
        try:
            await source.start_transfer(
                TransferRequest(
                    transfer_id=transfer_id,
                    staged_name=chain.source.staged_name,
                    size=upload.file_size,
                    hops=[self._hop(t, manifest, agents, seeds[t.id]) for t in claimed],
                )
            )
        except (AgentError, AgentUnreachable) as exc:
            await self._not_started(chain, claimed, route, exc)
            return
        log.info("sync transfer %s started: %s (upload %s)", transfer_id, route, chain.upload_id)
        self.on_started()

    async def _claim_chain(
        self, chain: Chain
    ) -> tuple[TemplateUpload, dict[int, str], list[TemplateSyncTask]]:
        """Claim the chain's tasks in order (pending -> syncing, a new attempt each); the
        chain ends at the first taken meanwhile. The upload, node names by id, the claimed."""
        claimed: list[TemplateSyncTask] = []
        upstream = chain.source.node_id
        async with self.db() as session:
            upload = await session.get(TemplateUpload, chain.upload_id)
            assert upload is not None
            names = {
                n.id: n.node_name
                for n in await session.scalars(select(PveNode).where(PveNode.cluster_id == upload.cluster_id))
            }
            senders = [names.get(upstream, "")]  # who may ask for tickets to the next hop
            for hop in chain.hops:
                if not await sync_task.claim(
                    session, hop.task_id, upstream, names.get(upstream, ""), ",".join(senders)
                ):
                    break  # taken meanwhile (another coordinator, a cancel): the chain ends here
                task = await session.get(TemplateSyncTask, hop.task_id, populate_existing=True)
                assert task is not None
                claimed.append(task)
                upstream = hop.target_node_id
                senders.append(task.target_node_name)
            await session.commit()
        return upload, names, claimed

    def _hop(
        self,
        task: TemplateSyncTask,
        manifest: ManifestView,
        agents: dict[int, AgentAddress],
        seeds: list[Seed],
    ) -> Hop:
        """One hop of a transfer chain: the target, its ticket for this attempt, and what it
        holds of the template already (earlier versions: their chunks are not sent)."""
        return Hop(
            task_id=task.id,
            task_uid=task.uid,
            epoch=task.epoch,
            node=task.target_node_name,
            url=agents[task.target_node_id].url,
            ticket=ticket_for(self.signer, task, manifest),
            seeds=seeds,
        )

    async def _no_manifest(
        self, claimed: list[TemplateSyncTask], route: str, exc: manifest_digests.NoManifest
    ) -> None:
        """The source cannot give the copy's manifest (its agent is gone, qemu-img failed):
        the attempt fails as a refused start does."""
        log.warning("sync %s: %s", route, exc)
        async with self.db() as session:
            for task in claimed:
                await retry_later(session, task.id, task.epoch, str(exc), self.config.sync_max_attempts)
            await session.commit()

    async def _not_started(
        self, chain: Chain, claimed: list[TemplateSyncTask], route: str, exc: AgentError | AgentUnreachable
    ) -> None:
        """The source agent refused the chain: its tasks wait for the source (busy), are
        planned again from another copy (missing), or count a failed attempt."""
        # Busy: still sending for attempts that have failed here (they stop at their next
        # ticket). No attempt was made: the chain waits for the slot.
        busy = isinstance(exc, AgentError) and exc.error == ErrorSlug.BUSY
        # The source evicted (or lost) its copy after this chain was planned: not a source
        # any more; the tasks are planned again from another copy, no attempt counted.
        missing = isinstance(exc, AgentError) and exc.error == ErrorSlug.MISSING_IMAGE
        if busy:
            log.info("sync %s: %s; waiting %.0f s", route, exc, BUSY_WAIT)
        elif missing:
            log.info("sync %s: %s; planning again from another copy", route, exc)
        else:
            log.warning("sync %s: source agent refused the transfer: %s", route, exc)
        async with self.db() as session:
            if missing:
                await forget_copy(session, chain.source.staged_name)
            for task in claimed:
                if busy or missing:
                    await unclaim(session, task.id, task.epoch, BUSY_WAIT)
                else:
                    await retry_later(
                        session,
                        task.id,
                        task.epoch,
                        f"the source could not start: {exc}",
                        self.config.sync_max_attempts,
                    )
            await session.commit()


async def unclaim(session: AsyncSession, task_id: int, epoch: int, wait: float) -> None:
    """A claimed task whose transfer never started: pending again, the attempt not counted."""
    await sync_task.unclaim(session, task_id, epoch, utcnow() + timedelta(seconds=wait))


async def retry_later(
    session: AsyncSession, task_id: int, epoch: int, reason: str, max_attempts: int, final: bool = False
) -> str:
    """An attempt failed: back to pending after a backoff, or failed for good. Returns the status."""
    task = await session.get(TemplateSyncTask, task_id, populate_existing=True)
    if task is None or task.status not in sync_task.RUNNING or task.epoch != epoch:
        return task.status if task else "gone"
    used = task.attempts - task.attempts_before_retry  # the limit counts from the last manual retry
    if final or used >= max_attempts:
        message = reason if final else f"gave up after {used} attempts: {reason}"
        if not await sync_task.fail(session, task, message, epoch=epoch):
            return task.status  # (another writer moved it since it was read)
        log.warning("sync task %s to %s failed: %s", task.id, task.target_node_name, message)
        return SyncTaskStatus.FAILED
    delay = backoff(used)
    message = f"attempt {task.attempts} failed: {reason}; retrying in {delay:.0f} s"
    if not await sync_task.requeue(session, task.id, epoch, utcnow() + timedelta(seconds=delay), message):
        return task.status
    log.warning("sync task %s to %s: %s", task.id, task.target_node_name, message)
    return SyncTaskStatus.PENDING


@dataclass
class _CopyWatch:
    """What a watcher saw of one copy attempt so far."""

    started: float
    last_change: float  # when the verified bytes last moved
    source_run: tuple[Any, ...] | None
    deadline: Deadline
    verified: int = -1  # bytes the target verified (-1: none reported yet)
    # The target's count of bytes received as last seen (the row's, recorded at the last
    # poll of whichever watcher): what the next report adds to the metrics.
    received: int = 0

    def saw(self, verified: int, now: float) -> None:
        if verified != self.verified:
            self.verified, self.last_change = verified, now


class SyncWatcher:
    """Follows one syncing/importing task (the JobRunner handler)."""

    def __init__(
        self,
        config: CoordinatorConfig,
        db: async_sessionmaker[AsyncSession],
        agents: AgentLinks,
        inventory: InventoryRefresher,
        on_change: Callable[[], None],
        on_bytes: Callable[[str, str, int], None] = lambda sender, receiver, step: None,
    ) -> None:
        """``on_bytes(sender, receiver, step)``: ``step`` more bytes reached a target
        (coordinator/metrics.py counts them per node)."""
        self.on_bytes = on_bytes
        self.config = config
        self.db = db
        self.agents = agents
        self.inventory = inventory
        self.on_change = on_change

    async def run(self, task_id: int) -> None:
        async with self.db() as session:
            task = await session.get(TemplateSyncTask, task_id)
        if task is None:
            return
        try:
            if task.status == SyncTaskStatus.SYNCING:
                task = await self._follow_copy(task)
            if task is not None and task.status == SyncTaskStatus.IMPORTING:
                await self._import(task)
        finally:
            self.on_change()  # a slot freed or a new copy to serve from: plan again

    async def give_up(self, task_id: int, reason: str) -> None:
        """The job engine's verdict on a watcher that kept raising: the task fails (as a
        final failure of an attempt does: its instance too)."""
        async with self.db() as session:
            task = await session.get(TemplateSyncTask, task_id)
            if task is None:
                return
            status = await retry_later(
                session, task.id, task.epoch, reason, self.config.sync_max_attempts, final=True
            )
            await session.commit()
        self.on_change()
        if status == SyncTaskStatus.FAILED:  # an import its target's agent may still run is stopped
            key = import_key(task.template_id, task.id)
            await stop_agent_import(self.agents, task.target_node_id, key, "the coordinator gave up on it")

    async def _fail_attempt(self, task: TemplateSyncTask, reason: str, final: bool = False) -> None:
        async with self.db() as session:
            await retry_later(session, task.id, task.epoch, reason, self.config.sync_max_attempts, final)
            await session.commit()

    async def _target(self, task: TemplateSyncTask) -> AgentClient | None:
        try:
            return await self.agents.for_node(task.target_node_id)
        except NoLiveAgent:
            return None

    async def _follow_copy(self, task: TemplateSyncTask) -> TemplateSyncTask | None:
        """Until the target verified the whole image (-> importing), or the attempt failed:
        no data for sync_idle_timeout, a stall, or the copy's deadline (scaled by size)."""
        started = time.monotonic()
        watch = _CopyWatch(
            started=started,
            last_change=started,
            source_run=await self._source_run(task),
            deadline=Deadline(
                scaled_timeout(self.config.copy_timeout, self.config.copy_seconds_per_gib, task.bytes_total)
            ),
            received=task.bytes_sent,
        )
        while True:
            agent = await self._target(task)
            view, untrusted = await self._poll_target(task, agent)
            if untrusted is not None:  # no attempt can fix a certificate: say so at once
                await self._fail_attempt(task, untrusted, final=True)
                return None
            now = time.monotonic()
            streaming = False
            if view is not None and view.epoch == task.epoch:
                self._count_bytes(task, watch, view.received_bytes)
                if view.state == "complete":
                    await self._progress(task, view.size, view)  # (bytes_total: the copy's)
                    return await self._copied(task, view)
                if view.state == "failed":
                    kind = view.error_kind
                    await self._fail_attempt(task, str(view.error), final=kind in FINAL_KINDS)
                    return None
                watch.saw(view.verified, now)
                if not await self._progress(task, watch.verified, view):
                    return None  # canceled or taken over meanwhile
                streaming = view.state == "receiving"
            elif not await self._still_current(task):
                return None
            reason = await self._attempt_failure(task, watch, now, streaming, agent is None)
            if reason is not None:
                await self._fail_attempt(task, reason)
                return None
            await asyncio.sleep(POLL_SECONDS)

    def _count_bytes(self, task: TemplateSyncTask, watch: _CopyWatch, received: int) -> None:
        step = counter_step(watch.received, received)
        watch.received = received
        self.on_bytes(sender_of(task.source_node_name, task.upstream_nodes), task.target_node_name, step)

    async def _poll_target(
        self, task: TemplateSyncTask, agent: AgentClient | None
    ) -> tuple[ReceiveView | None, str | None]:
        """The target's receive state of the task (None: nothing to read now), or why the
        target's agent cannot be trusted."""
        if agent is None:
            return None, None
        try:
            return await agent.receive_state(task.id, task.uid), None
        except AgentError as exc:
            if exc.status != 404:
                log.warning("sync task %s: target answered %s", task.id, exc)
        except AgentUntrusted as exc:
            return None, str(exc)
        except AgentUnreachable:
            pass
        return None, None

    async def _attempt_failure(
        self, task: TemplateSyncTask, watch: _CopyWatch, now: float, streaming: bool, no_agent: bool
    ) -> str | None:
        """Why the copy's attempt failed, or None while it may still succeed."""
        resumes = f"the copy resumes from byte {max(watch.verified, 0)}"
        if not streaming and await self._source_run(task) != watch.source_run:
            # Its transfer ended with it: no need to wait sync_idle_timeout to see that
            # (measured with a SIGTERM of the source mid-copy and a restart, idle timeout
            # 5 s: the copy was done 12.5 s after the restart before, 8.4 s now, ~5 s of
            # which the rest of the copy itself).
            return f"the source's agent on {task.source_node_name} stopped or restarted; {resumes}"
        if no_agent and now - watch.started > self.config.agent_timeout:
            return f"no live agent on target node {task.target_node_name}"
        idle_limit = self.config.sync_idle_timeout
        if not streaming and now - watch.last_change > idle_limit:
            return (
                f"no data reached {task.target_node_name} for {idle_limit:.0f} s "
                f"(from {task.source_node_name}); {resumes}"
            )
        if now - watch.last_change > STALL_LIMIT:
            return f"the copy stalled at byte {watch.verified} for {STALL_LIMIT:.0f} s"
        if watch.deadline.passed():
            return (
                f"the copy to {task.target_node_name} {watch.deadline.missed()} "
                f"(at byte {max(watch.verified, 0)} of {task.bytes_total})"
            )
        return None

    async def _progress(self, task: TemplateSyncTask, verified: int, view: ReceiveView) -> bool:
        """``view.size``: the copy's, as the target has it from the signed ticket (the image's
        virtual size: what ``bytes_total`` counts, whatever was known when the task was made)."""
        total = max(view.size, 1)
        async with self.db() as session:
            current = await sync_task.record_progress(
                session,
                task.id,
                SyncTaskStatus.SYNCING,
                task.epoch,
                bytes_done=verified,
                bytes_total=view.size,
                # What crossed the network and what the target had already (contract 6.1).
                bytes_sent=view.received_bytes,
                bytes_reused=view.reused_bytes,
                rate_bytes_per_sec=view.rate_bytes_per_sec,
                progress=min(COPY_SHARE, COPY_SHARE * verified // total),
            )
            await session.commit()
        return current

    async def _source_run(self, task: TemplateSyncTask) -> tuple[Any, ...] | None:
        """Which run of the source's agent this is: when it started, and whether it said
        goodbye. A change means the process that was sending is gone, and the transfer with
        it. (A relay's stop is not this: its sender routes around it.)"""
        async with self.db() as session:
            row = (
                await session.execute(
                    select(Agent.started_at, Agent.stopped_at).where(Agent.node_id == task.source_node_id)
                )
            ).first()
        return None if row is None else (row.started_at, row.stopped_at is None)

    async def _still_current(self, task: TemplateSyncTask) -> bool:
        async with self.db() as session:
            row = await session.get(TemplateSyncTask, task.id)
        return row is not None and row.status == task.status and row.epoch == task.epoch

    async def _copied(self, task: TemplateSyncTask, view: ReceiveView) -> TemplateSyncTask | None:
        async with self.db() as session:
            copied = await sync_task.copied(
                session,
                task.id,
                task.epoch,
                str(view.staged_name),
                COPY_SHARE,
                bytes_sent=view.received_bytes,
                bytes_reused=view.reused_bytes,
            )
            if not copied:
                return None
            await session.commit()
            row = await session.get(TemplateSyncTask, task.id)
        log.info("sync task %s: image verified on %s; importing", task.id, task.target_node_name)
        return row

    async def _import(self, task: TemplateSyncTask) -> None:
        async with self.db() as session:
            upload = await session.get(TemplateUpload, task.upload_id)
            template = await session.get(VmTemplate, task.template_id)
        if upload is None or template is None:
            await self._fail_attempt(task, "the template or its upload is gone", final=True)
            return
        agent = await self._target(task)
        if agent is None:
            await self._fail_attempt(task, f"no live agent on target node {task.target_node_name}")
            return
        order = ImportOrder(
            node_name=task.target_node_name,
            job=TemplateSyncTask,
            job_id=task.id,
            key=import_key(task.template_id, task.id),
            cluster_id=task.cluster_id,
            vmid=task.vmid,
            staged_name=task.staged_name,
            storage=task.storage_name,
            upload=upload,
            template=template,
        )
        end = await drive_import(
            agent,
            order,
            lambda pct: self._import_progress(task, pct),
            db=self.db,
            inventory=self.inventory,
            config=self.config,
        )
        if end.failed is None:
            await self._completed(task, end.vmid, end.volume_id)
        else:
            await self._fail_attempt(task, end.failed, end.final)

    async def _import_progress(self, task: TemplateSyncTask, pct: float) -> bool:
        """Record the import's progress; whether this attempt is still the task's."""
        async with self.db() as session:
            current = await sync_task.record_progress(
                session,
                task.id,
                SyncTaskStatus.IMPORTING,
                task.epoch,
                progress=COPY_SHARE + int((100 - COPY_SHARE) * min(pct, 99.0) / 100),
            )
            await session.commit()
        return current

    async def _completed(self, task: TemplateSyncTask, vmid: int, volume_id: str) -> None:
        async with self.db() as session:
            if not await sync_task.completed(session, task.id, task.epoch, vmid, volume_id):
                return
            await session.commit()
        log.info("sync task %s: %s has the template as VM %s", task.id, task.target_node_name, vmid)
