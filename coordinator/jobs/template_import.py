"""Making a staged image a PVE template on one node, through that node's agent.

The one import driver of both jobs that end in a template: an upload's import on its
import node and a sync task's import of the copy on its target node (``drive_import``:
the VMID recorded on the job's row, the request built from the template and its upload,
the failures mapped to a reason and whether trying again can help). The agent does the
PVE side (create the VM with ``import-from``, convert it to a template) under a key, so
asking again after a coordinator restart finds the same import instead of starting another.

The wait on the agent has a deadline scaled by the image's size (import_timeout,
import_seconds_per_gib; counted from when this coordinator began waiting). When it passes,
or when the job's row says the import is no longer wanted (a cascade delete), the agent's
import is canceled and the result is a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.config import CoordinatorConfig
from coordinator.db.models import TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.inventory.pve_client import PveError
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.vmids import NoFreeVmid, allocation_lock, held_by_us, lowest_free
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ImportErrorKind
from shared.messages.imports import ImportRequest
from shared.pve_outage import Retries
from shared.validation import InvalidInput, parse
from shared.vm_config import check_options, check_volumes

log = logging.getLogger(__name__)

# Template defaults for the VM; every key can be overridden per upload (vm_config), and
# together they pass the same allowlist (tests/unit/test_vm_config.py).
VM_DEFAULTS: dict[str, Any] = {
    "memory": 2048,
    "cores": 2,
    "scsihw": "virtio-scsi-single",
    "net0": "virtio,bridge=vmbr0",
    "ostype": "l26",
    "boot": "order=scsi0",
    "agent": "enabled=1",
    "serial0": "socket",
    "tags": "pvesphere",
}
POLL_SECONDS = 1.0
# Another VMID is tried this often when PVE says the chosen one was taken meanwhile.
MAX_VMID_TRIES = 20


def vm_name(template_name: str, template_id: int) -> str:
    """PVE wants a DNS name for a VM: dot-separated labels of letters, digits and inner dashes."""
    labels = (re.sub(r"[^A-Za-z0-9-]+", "-", label).strip("-") for label in template_name.split("."))
    name = ".".join(label for label in labels if label)[:63].strip("-.")
    return name or f"template-{template_id}"


def checked_options(vm_config: Mapping[str, Any], storage: str) -> dict[str, str]:
    """The options an import will send (defaults, then the upload's), checked against the
    allowlist for a template on ``storage``; ValueError names the first bad key."""
    options = check_options({**VM_DEFAULTS, **vm_config})
    check_volumes(options, storage)
    return options


def vm_options(vm_config: dict[str, Any], template_name: str, template_id: int) -> tuple[str, dict[str, Any]]:
    """(VM name, options) from the defaults and the upload's overrides."""
    options = {**VM_DEFAULTS, **vm_config}
    name = str(options.pop("name", "") or vm_name(template_name, template_id))
    return name, options


async def allocate_vmid(
    db: async_sessionmaker[AsyncSession],
    inventory: InventoryRefresher,
    config: CoordinatorConfig,
    cluster_id: int,
    exclude: set[int],
    record: Callable[[AsyncSession, int], Awaitable[None]],
) -> int:
    """The lowest template-range VMID that PVE does not use and no job of ours holds.

    ``record`` saves it on the job in the same transaction, so two allocations never
    hand out the same id; PVE's own "already exists" covers anyone else.
    """
    async with allocation_lock():
        used = await inventory.used_vmids(cluster_id)
        async with db() as session:
            used |= await held_by_us(session, cluster_id)
            vmid = lowest_free(used | exclude, config.template_vmid_min, config.template_vmid_max)
            await record(session, vmid)
            await session.commit()
    return vmid


@dataclass
class ImportResult:
    state: str  # done | failed
    vmid: int  # 0: none was chosen (PVE could not be asked which are free)
    volume_id: str = ""
    error: str | None = None
    error_kind: ImportErrorKind | None = None


async def import_template(
    agent: AgentClient,
    *,
    db: async_sessionmaker[AsyncSession],
    inventory: InventoryRefresher,
    config: CoordinatorConfig,
    cluster_id: int,
    key: str,
    vmid: int | None,
    image_size: int,
    record_vmid: Callable[[AsyncSession, int], Awaitable[None]],
    on_progress: Callable[[float], Awaitable[bool]],
    **request: Any,
) -> ImportResult:
    """Choose a VMID (unless the job has one), import, and choose again if PVE says it was taken.

    ``request`` is the rest of the agent's import request (staged_name, storage, name,
    description, options). ``on_progress`` records the progress and answers whether the
    job still wants the import. A PVE that does not answer when the VMIDs are read is waited
    out within the deadline (the agent does the same for its own PVE calls). Agent and other
    PVE failures (AgentError, AgentUnreachable, NoFreeVmid, PveError) propagate: the caller
    decides whether to try again later.
    """
    deadline = Deadline(scaled_timeout(config.import_timeout, config.import_seconds_per_gib, image_size))
    tried: set[int] = set()
    retries = Retries()
    while True:
        if vmid is None:
            chosen = await _choose_vmid(
                db, inventory, config, cluster_id, key, tried, record_vmid, on_progress, deadline, retries
            )
            if isinstance(chosen, ImportResult):
                return chosen
            vmid = chosen
        # Checked here as the agent checks it (parse: options normalised to the allowlist's text).
        order = parse(ImportRequest, {"key": key, "vmid": vmid, "image_size": image_size, **request})
        result = await _follow_import(agent, order, key, vmid, deadline, on_progress)
        if result.error_kind == ImportErrorKind.VMID_TAKEN and len(tried) < MAX_VMID_TRIES:
            log.info("%s: VMID %s was taken meanwhile; choosing another", key, vmid)
            tried.add(vmid)
            vmid = None
            continue
        return result


async def _choose_vmid(
    db: async_sessionmaker[AsyncSession],
    inventory: InventoryRefresher,
    config: CoordinatorConfig,
    cluster_id: int,
    key: str,
    tried: set[int],
    record_vmid: Callable[[AsyncSession, int], Awaitable[None]],
    on_progress: Callable[[float], Awaitable[bool]],
    deadline: Deadline,
    retries: Retries,
) -> int | ImportResult:
    """A free VMID (none of ``tried``), read again while PVE does not answer and the deadline
    allows; else the failed result (no time left, or the job no longer wants the import)."""
    while True:
        try:
            vmid = await allocate_vmid(db, inventory, config, cluster_id, tried, record_vmid)
        except PveError as exc:
            reason = exc.transient()
            if reason is None:
                raise
            delay = retries.failed(reason, exc.message, deadline.remaining())
            if delay is None:
                error = f"reading VMIDs: {retries.summary()}; no time left within the deadline"
                return ImportResult("failed", 0, error=error, error_kind=ImportErrorKind.PVE_UNREACHABLE)
            log.warning("%s: reading VMIDs: %s; trying again in %.0f s", key, retries.summary(), delay)
            if not await on_progress(0.0):
                return ImportResult("failed", 0, error="canceled", error_kind=ImportErrorKind.CANCELED)
            await asyncio.sleep(delay)
            continue
        log.info("%s: VMID %s chosen", key, vmid)
        return vmid


async def _follow_import(
    agent: AgentClient,
    order: ImportRequest,
    key: str,
    vmid: int,
    deadline: Deadline,
    on_progress: Callable[[float], Awaitable[bool]],
) -> ImportResult:
    """Start the agent's import and poll it until it ends; canceled (and failed) once the job
    no longer wants it or the deadline passes."""
    op = await agent.start_import(order)
    while op.state == "running":
        if not await on_progress(op.progress):
            await cancel_import(agent, key, "no longer wanted")
            return ImportResult("failed", vmid, error="canceled", error_kind=ImportErrorKind.CANCELED)
        if deadline.passed():
            await cancel_import(agent, key, f"the coordinator waited {deadline.seconds:.0f} s")
            error = f"{deadline.missed()} (the coordinator's deadline); canceled"
            return ImportResult("failed", vmid, error=error, error_kind=ImportErrorKind.TIMEOUT)
        await asyncio.sleep(POLL_SECONDS)
        op = await agent.get_import(key)
    return ImportResult(
        state=op.state,
        vmid=vmid,
        volume_id=op.volume_id or "",
        error=op.error,
        error_kind=op.error_kind,
    )


async def cancel_import(agent: AgentClient, key: str, reason: str) -> None:
    """Stop the agent's import (its PVE task and unfinished VM); an agent that cannot be
    told stops it at its own deadline."""
    try:
        await agent.cancel_import(key, reason)
        log.info("%s: import canceled: %s", key, reason)
    except (AgentError, AgentUnreachable) as exc:
        if isinstance(exc, AgentError) and exc.status == 404:
            return  # none under this key (never started, or the agent restarted since)
        log.warning("%s: canceling the import failed: %s", key, exc)


async def stop_agent_import(agents: AgentLinks, node_id: int, key: str, reason: str) -> None:
    """Stop the import that the agent of ``node_id`` may still run under ``key``, for a job
    that gave up on it (nobody follows it any more)."""
    try:
        agent = await agents.for_node(node_id)
    except NoLiveAgent:
        return  # an agent that is away stops its import at its own deadline
    await cancel_import(agent, key, reason)


@dataclass(frozen=True)
class ImportOrder:
    """What a job asks its node's agent to import, and the job's row that records the VMID."""

    node_name: str
    job: type[TemplateUpload] | type[TemplateSyncTask]
    job_id: int
    key: str
    cluster_id: int
    vmid: int | None  # chosen by an earlier attempt, or None
    staged_name: str
    storage: str
    upload: TemplateUpload  # the image's size and VM settings
    template: VmTemplate


@dataclass(frozen=True)
class ImportEnd:
    """How the import ended: done (``failed`` None), or failed with the reason; ``final``:
    asking again cannot help (else the job tries again later)."""

    vmid: int = 0
    volume_id: str = ""
    failed: str | None = None
    final: bool = False


async def drive_import(
    agent: AgentClient,
    order: ImportOrder,
    on_progress: Callable[[float], Awaitable[bool]],
    *,
    db: async_sessionmaker[AsyncSession],
    inventory: InventoryRefresher,
    config: CoordinatorConfig,
) -> ImportEnd:
    """Import through ``agent`` as ``order`` says (see import_template for ``on_progress``)."""
    upload, template, node = order.upload, order.template, order.node_name
    job = order.job

    async def record_vmid(session: AsyncSession, vmid: int) -> None:
        await session.execute(update(job).where(job.id == order.job_id).values(vmid=vmid))

    name, options = vm_options(json.loads(upload.vm_config or "{}"), template.template_name, template.id)
    try:
        result = await import_template(
            agent,
            db=db,
            inventory=inventory,
            config=config,
            cluster_id=order.cluster_id,
            key=order.key,
            vmid=order.vmid,
            image_size=max(upload.file_size, upload.virtual_size),
            record_vmid=record_vmid,
            on_progress=on_progress,
            staged_name=order.staged_name,
            storage=order.storage,
            name=name,
            description=template.description,
            options=options,
        )
    except AgentError as exc:
        if exc.status == 400:  # the agent refused the request itself: asking again cannot help
            return ImportEnd(failed=f"agent of {node} refused the import: {exc}", final=True)
        return ImportEnd(failed=f"agent of {node}: {exc}")
    except AgentUnreachable as exc:
        return ImportEnd(failed=f"agent of {node}: {exc}")
    except InvalidInput as exc:  # what the agent would refuse with a 400: asking again cannot help
        return ImportEnd(failed=f"the import for {node} is invalid: {exc}", final=True)
    except NoFreeVmid as exc:
        return ImportEnd(failed=str(exc), final=True)
    except PveError as exc:
        return ImportEnd(failed=f"reading VMIDs from PVE: {exc.message}")
    if result.state == "done":
        return ImportEnd(result.vmid, result.volume_id)
    final = result.error_kind != ImportErrorKind.INTERRUPTED
    return ImportEnd(result.vmid, failed=f"import on {node} failed: {result.error}", final=final)
