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

import logging
from datetime import timedelta
from typing import Annotated

from msgspec import Meta

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.api.agent_staging import (
    AgentOp,
    AsAnUpload,
    agent_of,
    agent_refusal,
    reserve_for,
    stage_on_agent,
)
from coordinator.api.routing import Call, Routes
from coordinator.api.templates import load_workable_template
from coordinator.api.upload import (
    UploadResult,
    after_import,
    check_vm_config,
    record_and_answer,
)
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import VmTemplate
from coordinator.upload_plan import UploadPlan, plan_from_vm
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.exports import DiskKey, ExportAsk, ExportRequest, ExportSource, SnapshotName
from shared.messages.uploads import Staged

log = logging.getLogger(__name__)
routes = Routes("templates")


class FromVmBody(AsAnUpload):
    cluster_id: Annotated[int, Meta(ge=1)]
    node_id: Annotated[int, Meta(ge=1, description="the node the VM is on")]
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
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

    def __post_init__(self) -> None:
        self.check_new_or_version(("template_name", "storage_id"), ("template_name",))


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
    upload = await reserve_for(call, body, plan, template, file_name(source), "qcow2")
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


async def _export(
    call: Call, agent: AgentClient, upload_id: int, plan: UploadPlan, ask: ExportAsk, source: ExportSource
) -> Staged:
    """The disk exported into the import node's staging as upload ``upload_id``'s image. On any
    failure the export is stopped, what it left removed, and the upload abandoned."""
    config = call.app[CONFIG]
    request = ExportRequest(
        upload_id=upload_id,
        vmid=ask.vmid,
        disk=ask.disk,
        snapshot=ask.snapshot,
        max_virtual_size=config.max_virtual_size,
        label=file_name(source),
    )
    op = AgentOp(
        upload_id,
        "export",
        ErrorSlug.EXPORT_FAILED,
        lambda: agent.start_export(request),
        lambda: agent.get_export(upload_id),
        lambda reason: agent.cancel_export(upload_id, reason),
    )
    deadline = Deadline(scaled_timeout(config.import_timeout, config.import_seconds_per_gib, source.size))
    return await stage_on_agent(call, agent, plan, op, deadline)
