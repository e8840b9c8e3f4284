"""The clone job: a VM cloned from a template on a node, through an agent.

A clone under way is a durable job on the job engine (lease, the clone kind's error limits).
Each step is on the row before the next one starts, so a coordinator that restarts, or a
replica that takes the job over, picks up where it was:

1. ``waiting_for_sync``: the node's sync task brings the template first. Completed: the
   instance's VMID is the clone's source; failed or canceled: the clone fails with its reason.
2. A slot of the node's clone limit (max_clones_per_node, over every replica:
   coordinator/shared_limits.py); none free: the job is postponed a moment.
3. A VMID (the clone range, else PVE's next free id: coordinator/vmids.py) held on the row's
   unique ``vmid_key``; a VMID another clone in flight holds is refused by the database and
   the next one chosen.
4. ``cloning``: the agent of the source node clones under the key ``c<clone id>``, so asking
   again (after a restart) finds the running or finished clone instead of starting another.
   Its progress (PVE's task log: full clones report it) is copied onto the row. A VMID that
   PVE says was taken meanwhile: another is chosen and the agent asked again. A clone that
   fails in PVE leaves no half-made VM (the agent destroys it); the row keeps the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.clone_request import available_instance
from coordinator.config import CoordinatorConfig
from coordinator.db.models import Clone, TemplateSyncTask, VmTemplate
from coordinator.db.types import utcnow
from coordinator.errors import CoordinatorError
from coordinator.inventory.pve_client import PveError
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.shared_limits import SharedLimit
from coordinator.states import clone as clone_states
from coordinator.states import sync_task
from coordinator.states.clone import CloneStatus
from coordinator.vmids import NoFreeVmid, clone_range, held_by_us, lowest_free
from shared.backoff import exponential
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ImportErrorKind
from shared.messages.clones import CloneRequest, CloneView
from shared.validation import parse

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# A clone waiting for its sync task, or for a slot of its node's limit, looks again this soon.
WAIT_SECONDS = 2.0
# An agent or PVE that failed the attempt is asked again after 5, 10, 20, 40 s (at most 2 min),
# MAX_ATTEMPTS times in all.
MAX_ATTEMPTS = 5
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 120.0
# Another VMID is tried this often when PVE (or another clone in flight) holds the chosen one.
MAX_VMID_TRIES = 20
# Failures the agent reports that asking again later can help.
TRANSIENT = (ImportErrorKind.INTERRUPTED, ImportErrorKind.PVE_UNREACHABLE)


def clone_key(clone_id: int) -> str:
    return f"c{clone_id}"


def clone_description(template: VmTemplate, version: int) -> str:
    """The clone's own description: where it came from (never the template's, whose marker
    would make the clone look like one of our templates)."""
    return (
        f"Cloned by pvesphere from template {template.template_name!r} (id {template.id}, version {version})"
    )


class Retry(CoordinatorError):
    """This attempt cannot go on now (an agent or PVE away); the job tries again later."""


class CloneJobs:
    def __init__(
        self,
        config: CoordinatorConfig,
        db: async_sessionmaker[AsyncSession],
        agents: AgentLinks,
        inventory: InventoryRefresher,
    ) -> None:
        self.config = config
        self.db = db
        self.agents = agents
        self.inventory = inventory
        self._limits: dict[int, SharedLimit] = {}

    def node_limit(self, node_id: int) -> SharedLimit:
        """The node's clone limit, held across replicas (its slots in the database)."""
        if node_id not in self._limits:
            self._limits[node_id] = SharedLimit(
                self.db,
                f"clone-node-{node_id}",
                self.config.max_clones_per_node,
                self.config.job_lease_seconds,
            )
        return self._limits[node_id]

    async def run(self, clone_id: int) -> None:
        """The job runner's handler: one clone as far as it can go now."""
        async with self.db() as session:
            row = await session.get(Clone, clone_id)
        if row is None or row.status not in clone_states.ACTIVE:
            return
        if row.status == CloneStatus.WAITING_FOR_SYNC and row.source_vmid is None:
            if not await self._after_sync(row):
                return
        slot = await self.node_limit(row.node_id).take(clone_key(clone_id))
        if slot is None:
            await self._postpone(row, WAIT_SECONDS)
            return
        try:
            await self._clone(row)
        except Retry as exc:
            await self._retry_later(row, str(exc))
        finally:
            await self.node_limit(row.node_id).give_back(slot)

    async def _after_sync(self, row: Clone) -> bool:
        """Whether the clone's node has the template now (its VMID recorded as the source);
        else the clone waits on, or fails with the sync's reason."""
        async with self.db() as session:
            task = await session.get(TemplateSyncTask, row.sync_task_id) if row.sync_task_id else None
            instance = await available_instance(session, row.template_id, row.node_id, row.version)
            vmid = instance.vmid if instance is not None else None
        if vmid is not None:
            async with self.db() as session:
                kept = await clone_states.record(
                    session, row.id, CloneStatus.WAITING_FOR_SYNC, source_vmid=vmid
                )
                await session.commit()
            row.source_vmid = vmid
            return kept
        if task is not None and task.status in sync_task.ACTIVE:
            await self._postpone(row, WAIT_SECONDS)
            return False
        why = "was deleted" if task is None else f"{task.status}: {task.error_message or 'no reason given'}"
        await self.fail(row.id, f"sync task {row.sync_task_id} to {row.node_name} {why}")
        return False

    async def _clone(self, row: Clone) -> None:
        try:
            agent = await self.agents.for_node(row.source_node_id)
        except NoLiveAgent as exc:
            raise Retry(str(exc)) from None
        async with self.db() as session:
            template = await session.get(VmTemplate, row.template_id)
        assert template is not None
        tried: set[int] = set()
        deadline = Deadline(
            scaled_timeout(self.config.clone_timeout, self.config.clone_seconds_per_gib, row.image_size)
        )
        cloning = row.status == CloneStatus.CLONING
        while True:
            if row.vmid_key is None and not cloning:
                vmid = await self._choose_vmid(row, tried)
                if vmid is None:
                    return
                row.vmid = row.vmid_key = vmid
            if not cloning:
                async with self.db() as session:
                    started = await clone_states.start(session, row.id)
                    await session.commit()
                if not started:
                    return  # no longer ours (failed by the engine's give_up, lease lost)
                cloning = True
                log.info("clone %s: VM %s on %s from VM %s", row.id, row.vmid, row.node_name, row.source_vmid)
            view = await self._follow(agent, self._request(row, template), deadline)
            if view is None:
                return
            if view.state == "done":
                await self._completed(row, view)
                return
            if (
                view.error_kind == ImportErrorKind.VMID_TAKEN
                and not row.vmid_given
                and len(tried) < MAX_VMID_TRIES
            ):
                assert row.vmid is not None
                tried.add(row.vmid)
                log.info("clone %s: VMID %s was taken meanwhile; choosing another", row.id, row.vmid)
                vmid = await self._choose_vmid(row, tried)
                if vmid is None:
                    return
                row.vmid = row.vmid_key = vmid
                continue
            if view.error_kind in TRANSIENT:
                raise Retry(f"clone on {row.source_node_name}: {view.error}")
            await self.fail(row.id, f"clone on {row.source_node_name} failed: {view.error}")
            return

    def _request(self, row: Clone, template: VmTemplate) -> CloneRequest:
        assert row.vmid is not None and row.source_vmid is not None
        return parse(
            CloneRequest,
            {
                "key": clone_key(row.id),
                "source_vmid": row.source_vmid,
                "vmid": row.vmid,
                "name": row.name,
                "full": not row.linked,
                "target_node": row.node_name if row.source_node_id != row.node_id else None,
                "target_storage": row.target_storage,
                "description": clone_description(template, row.version),
                "options": json.loads(row.vm_config or "{}"),
                "image_size": row.image_size,
            },
        )

    async def _follow(
        self, agent: AgentClient, request: CloneRequest, deadline: Deadline
    ) -> CloneView | None:
        """Ask the agent to clone (or find the clone under way) and follow it to its end; None
        when the job stops here (the row no longer ours, or failed for the deadline)."""
        clone_id = int(request.key[1:])
        try:
            view = await agent.start_clone(request)
            while view.state == "running":
                async with self.db() as session:
                    mine = await clone_states.record(
                        session, clone_id, CloneStatus.CLONING, progress=int(view.progress)
                    )
                    await session.commit()
                if not mine:
                    return None  # failed by the engine meanwhile, or taken over: its worker follows it
                if deadline.passed():
                    await self._cancel(agent, request.key, f"the coordinator waited {deadline.seconds:.0f} s")
                    await self.fail(
                        clone_id, f"the clone {deadline.missed()} (the coordinator's deadline); canceled"
                    )
                    return None
                await asyncio.sleep(POLL_SECONDS)
                view = await agent.get_clone(request.key)
        except AgentError as exc:
            if exc.status == 400:  # the agent refused the request itself: asking again cannot help
                await self.fail(clone_id, f"the agent refused the clone: {exc}")
                return None
            raise Retry(f"agent: {exc}") from None
        except AgentUnreachable as exc:
            raise Retry(f"agent: {exc}") from None
        return view

    async def _cancel(self, agent: AgentClient, key: str, reason: str) -> None:
        try:
            await agent.cancel_clone(key, reason)
        except (AgentError, AgentUnreachable) as exc:
            log.warning("%s: canceling the clone failed: %s", key, exc)

    async def _choose_vmid(self, row: Clone, tried: set[int]) -> int | None:
        """A free VMID held on the row; None when the clone failed for want of one."""
        for _ in range(MAX_VMID_TRIES):
            try:
                vmid = await self._free_vmid(row.cluster_id, tried)
            except NoFreeVmid as exc:
                await self.fail(row.id, str(exc))
                return None
            except PveError as exc:
                raise Retry(f"reading VMIDs from PVE: {exc.message}") from None
            try:
                async with self.db() as session:
                    held = await clone_states.hold_vmid(session, row.id, vmid)
                    await session.commit()
            except IntegrityError:  # another clone in flight holds it (maybe on another replica)
                tried.add(vmid)
                continue
            if not held:
                return None  # no longer ours
            log.info("clone %s: VMID %s chosen", row.id, vmid)
            return vmid
        await self.fail(row.id, f"no free VMID after {MAX_VMID_TRIES} tries (every one was taken meanwhile)")
        return None

    async def _free_vmid(self, cluster_id: int, tried: set[int]) -> int:
        config = self.config
        unset = (config.clone_vmid_min, config.clone_vmid_max) == (0, 0)
        next_free = await self.inventory.next_vmid(cluster_id) if unset else None
        low, high = clone_range(config.clone_vmid_min, config.clone_vmid_max, next_free)
        used = await self.inventory.used_vmids(cluster_id)
        async with self.db() as session:
            used |= await held_by_us(session, cluster_id)
        return lowest_free(used | tried, low, high, "clone_vmid_min/max")

    async def _completed(self, row: Clone, view: CloneView) -> None:
        async with self.db() as session:
            done = await clone_states.completed(session, row.id, view.linked)
            await session.commit()
        if done:
            log.info(
                "clone %s: VM %s on %s is ready (%s)",
                row.id,
                row.vmid,
                row.node_name,
                "linked" if view.linked else "full",
            )

    async def _postpone(self, row: Clone, seconds: float) -> None:
        async with self.db() as session:
            await clone_states.record(
                session,
                row.id,
                CloneStatus(row.status),
                next_attempt_at=utcnow() + timedelta(seconds=seconds),
            )
            await session.commit()

    async def _retry_later(self, row: Clone, reason: str) -> None:
        attempts = row.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            await self.fail(row.id, f"{reason} (gave up after {attempts} attempts)")
            return
        delay = exponential(attempts, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        log.warning("clone %s: %s; retrying in %.0f s", row.id, reason, delay)
        async with self.db() as session:
            await clone_states.record(
                session,
                row.id,
                None,
                attempts=attempts,
                error_message=reason,
                next_attempt_at=utcnow() + timedelta(seconds=delay),
            )
            await session.commit()

    async def fail(self, clone_id: int, reason: str, *, leased: bool = True) -> None:
        async with self.db() as session:
            failed = await clone_states.fail(session, clone_id, reason, leased=leased)
            await session.commit()
        if failed:
            log.warning("clone %s failed: %s", clone_id, reason)

    async def give_up(self, clone_id: int, reason: str) -> None:
        """The job engine's verdict on a handler that kept raising: the clone fails, and a
        clone its agent may still run is stopped (the agent destroys the unfinished VM)."""
        async with self.db() as session:
            row = await session.get(Clone, clone_id)
        if row is None or row.status not in clone_states.ACTIVE:
            return
        await self.fail(clone_id, reason, leased=False)
        if row.status == CloneStatus.CLONING:
            try:
                agent = await self.agents.for_node(row.source_node_id)
            except NoLiveAgent:
                return  # an agent that is away stops its clone at its own deadline
            await self._cancel(agent, clone_key(clone_id), "the coordinator gave up on it")
