"""POST /templates/from-vm: a template made from a VM's disk (contract 6.3).

The upload's flow with the file replaced by an export: everything checkable is checked
first (the plan: cluster, node, storage, sync nodes, name; then the node's agent says whether
the VM, its disk and the snapshot will do: 404, 409 for a running VM without a snapshot,
400), so a bad request leaves nothing. Then the upload's rows are reserved (its file name
``vm-<vmid>-<disk>[-<snapshot>].qcow2``), the agent exports the disk into its staging under
that upload's name and validates it like an upload, and the staged image is recorded and
imported exactly as an upload's is (instances, sync tasks, the import job). An export that
fails after that is given up as a broken-off upload is: its partial copy removed, the
template row gone, a failed upload record kept with the reason. The source VM is only read.

With ``template_id`` the disk becomes that template's next version (contract 6.1): on the
template's storage, rolled out as an uploaded version is (coordinator/api/versions.py); an
export that fails leaves the template as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator import uploads
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call, Routes
from coordinator.api.templates import TemplateName, load_workable_template
from coordinator.api.upload import (
    NodeIds,
    UploadResult,
    after_import,
    check_vm_config,
    incoming_of,
    record_and_answer,
)
from coordinator.appkeys import AGENTS, CONFIG, DB
from coordinator.db.models import TemplateUpload, VmTemplate
from coordinator.jobs import engine
from coordinator.upload_plan import UploadPlan, plan_from_vm
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.exports import DiskKey, ExportAsk, ExportRequest, ExportSource, SnapshotName
from shared.messages.uploads import Staged
from shared.text_fields import Description
from shared.validation import Input
from shared.vm_config import SUMMARY as VM_CONFIG_SUMMARY
from shared.vm_config import VmConfig

log = logging.getLogger(__name__)
routes = Routes("templates")
POLL_SECONDS = 0.5
# A refusal of the agent passed on with its own status; anything else is the agent failing.
PASSED_ON = (400, 404, 409, 413, 422, 503, 504, 507)


class FromVmBody(Input):
    cluster_id: Annotated[int, Meta(ge=1)]
    node_id: Annotated[int, Meta(ge=1, description="the node the VM is on")]
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
    template_name: Annotated[TemplateName | None, Meta(description="required without template_id")] = None
    storage_id: (
        Annotated[
            int,
            Meta(
                ge=1,
                description="a storage the node sees (its own, or shared); required without "
                "template_id, else the template's",
            ),
        ]
        | None
    ) = None
    disk: Annotated[DiskKey | None, Meta(description="default: the VM's boot disk")] = None
    snapshot: Annotated[
        SnapshotName | None, Meta(description="export the disk as it was at this snapshot (a qcow2 disk)")
    ] = None
    description: Description | None = None
    sync_node_ids: NodeIds = msgspec.field(default_factory=NodeIds)
    vm_config: Annotated[VmConfig, Meta(description=f"as the upload's: {VM_CONFIG_SUMMARY}")] = msgspec.field(
        default_factory=VmConfig
    )
    template_id: (
        Annotated[
            int,
            Meta(
                ge=1,
                description="make the disk a new version of this template (on its storage), rolled "
                "out as an uploaded version is",
            ),
        ]
        | None
    ) = None
    rollout: Annotated[bool, Meta(description="with template_id: as a version upload's rollout")] = True
    wait: bool = False

    def __post_init__(self) -> None:
        if self.template_id is None:
            missing = [name for name in ("template_name", "storage_id") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required for a new template "
                    "(or template_id, to make a new version of one)"
                )
        elif self.template_name is not None or self.sync_node_ids:
            raise ValueError(
                "with template_id the disk is a new version of that template: its name stays, and it "
                "is rolled out to the nodes holding earlier versions (leave out template_name and "
                "sync_node_ids)"
            )


def file_name(source: ExportSource) -> str:
    """The upload's file name: which disk of which VM (at which snapshot) it came from."""
    snap = f"-{source.snapshot}" if source.snapshot else ""
    return f"vm-{source.vmid}-{source.disk}{snap}.qcow2"


@routes.post(
    "/templates/from-vm",
    role="operator",
    body=FromVmBody,
    response=UploadResult,
    errors=(400, 404, 409, 422, 502, 503, 504, 507),
)
async def template_from_vm(call: Call) -> UploadResult:
    """Make a template from a VM's disk: the node's agent copies it (stopped VM, or at a
    snapshot) into staging, validates it like an upload, and it is imported as an upload is.

    The answer comes once the copy is staged and valid (with wait=true: after the import);
    its data is the upload's answer. The VM is never changed; a running VM without
    ``snapshot`` is a 409.
    """
    body: FromVmBody = call.body
    template = None
    if body.template_id is not None:
        template, _ = await load_workable_template(call, body.template_id)
    plan = await _plan(call, body, template)
    agent = await agent_of(call, plan)
    ask = ExportAsk(vmid=body.vmid, disk=body.disk, snapshot=body.snapshot)
    try:
        source = await agent.check_export(ask)
    except (AgentError, AgentUnreachable) as exc:
        raise agent_refusal(exc, plan) from None
    upload = await _reserve(call, body, plan, template, file_name(source))
    log.info(
        "upload %s: %s of VM %s on %s%s for template %r",
        upload.id,
        source.disk,
        source.vmid,
        plan.import_node.node_name,
        f" at snapshot {source.snapshot}" if source.snapshot else "",
        upload.template_name,
    )
    staged = await _export(call, agent, upload.id, plan, ask, source)
    result = await record_and_answer(call, upload, plan, staged)
    return await after_import(call, result) if body.wait else result


async def _plan(call: Call, body: FromVmBody, template: VmTemplate | None) -> UploadPlan:
    """What the template (or ``template``'s new version) will be made as, checked before the
    VM is looked at (the VM options too: the same allowlist as an upload's)."""
    async with call.app[DB]() as session:
        plan = await plan_from_vm(
            session,
            template_name=body.template_name or "",
            cluster_id=body.cluster_id,
            node_id=body.node_id,
            storage_id=body.storage_id,
            sync_node_ids=body.sync_node_ids,
            agent_timeout=timedelta(seconds=call.app[CONFIG].agent_timeout),
            version_of=template,
            rollout=body.rollout,
        )
    check_vm_config(body.vm_config, plan)
    return plan


async def _reserve(
    call: Call, body: FromVmBody, plan: UploadPlan, template: VmTemplate | None, name: str
) -> TemplateUpload:
    """The upload's rows: a new template's, or ``template``'s next version's."""
    incoming = incoming_of(call, name, "qcow2", body.vm_config, body.description or "")
    if template is None:
        return await uploads.reserve(call.app[DB], plan, body.template_name or "", incoming)
    return await uploads.reserve_version(call.app[DB], plan, template, incoming)


async def agent_of(call: Call, plan: UploadPlan) -> AgentClient:
    try:
        return await call.app[AGENTS].for_node(plan.import_node.id)
    except Exception as exc:
        raise ApiError(503, ErrorSlug.NO_LIVE_AGENT, str(exc)) from None


def agent_refusal(exc: AgentError | AgentUnreachable, plan: UploadPlan) -> ApiError:
    node = plan.import_node.node_name
    if isinstance(exc, AgentError) and exc.status in PASSED_ON:
        return ApiError(exc.status, exc.error, exc.message)
    if isinstance(exc, AgentError) and exc.error == ErrorSlug.PVE_ERROR:  # PVE said no, or did not answer
        return ApiError(502, exc.error, exc.message)
    return ApiError(503, ErrorSlug.AGENT_FAILED, f"agent of {node} failed: {exc}")


async def _export(
    call: Call, agent: AgentClient, upload_id: int, plan: UploadPlan, ask: ExportAsk, source: ExportSource
) -> Staged:
    """The disk exported into the import node's staging as upload ``upload_id``'s image. On any
    failure the export is stopped, what it left removed, and the upload abandoned."""
    config, db = call.app[CONFIG], call.app[DB]
    keeper = asyncio.create_task(
        engine.keep_lease(db, TemplateUpload, upload_id, config.job_lease_seconds, f"upload {upload_id}")
    )
    request = ExportRequest(
        upload_id=upload_id,
        vmid=ask.vmid,
        disk=ask.disk,
        snapshot=ask.snapshot,
        max_virtual_size=config.max_virtual_size,
        label=file_name(source),
    )
    # The agent's own deadline ends the export first; this one covers an agent that went silent.
    deadline = Deadline(scaled_timeout(config.import_timeout, config.import_seconds_per_gib, source.size))
    try:
        view = await agent.start_export(request)
        while view.state == "running":
            if deadline.passed():
                raise ApiError(504, ErrorSlug.EXPORT_FAILED, f"the export {deadline.missed()}")
            await asyncio.sleep(POLL_SECONDS)
            view = await agent.get_export(upload_id)
        if view.state == "failed" or view.staged is None:
            status = view.status if view.status in PASSED_ON else 502
            raise ApiError(status, view.error_slug or ErrorSlug.EXPORT_FAILED, view.error or "export failed")
        return view.staged
    except (AgentError, AgentUnreachable, ApiError) as exc:
        error = exc if isinstance(exc, ApiError) else agent_refusal(exc, plan)
        await _give_up(db, agent, upload_id, error.message)
        raise error from None
    except BaseException as exc:
        # Cancelled (shutting down) or a bug: leave nothing half-made either way.
        await asyncio.shield(_give_up(db, agent, upload_id, f"export broke off: {exc.__class__.__name__}"))
        raise
    finally:
        keeper.cancel()


async def _give_up(db: Any, agent: AgentClient, upload_id: int, reason: str) -> None:
    """Stop the export and remove whatever it left on the agent; abandon the upload."""
    with contextlib.suppress(AgentError, AgentUnreachable):
        await agent.cancel_export(upload_id, reason[:200])
    with contextlib.suppress(AgentError, AgentUnreachable):
        await agent.delete_upload(upload_id)
    await uploads.abandon(db, upload_id, reason)
