"""A template made from what a node's agent exports into its staging (from_vm.py: a VM's
disk; from_volume.py: a volume on a PVE storage): the upload's flow with the file replaced
by an export.

Everything checkable is checked first (the plan: cluster, node, storage, sync nodes, name,
VM options; then the node's agent says whether the source will do: 404, 409, 400), so a bad
request leaves nothing. Then the upload's rows are reserved, the agent copies the source
into its staging under that upload's name and validates it like an upload, and the staged
image is recorded and imported exactly as an upload's is (instances, sync tasks, the import
job). An export that fails after that is given up as a broken-off upload is (agent_staging.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from msgspec import Meta

from agent.client import AgentError, AgentUnreachable
from coordinator.api.agent_staging import AsAnUpload, agent_of, agent_refusal, reserve_for, stage_export
from coordinator.api.routing import Call
from coordinator.api.templates import load_workable_template
from coordinator.api.upload import UploadResult, after_import, check_vm_config, record_and_answer
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import VmTemplate
from coordinator.upload_plan import UploadPlan, plan_from_vm
from shared.messages.exports import ExportAsk, ExportSource, describe

log = logging.getLogger(__name__)
# What a route answers that makes a template from an export (its refusals and the agent's).
EXPORT_ERRORS = (400, 404, 409, 422, 502, 503, 504, 507)


class OnNodeBody(AsAnUpload, kw_only=True):
    """The fields of a body whose source is on one node (its agent exports it)."""

    cluster_id: Annotated[int, Meta(ge=1)]
    node_id: Annotated[int, Meta(ge=1, description="the node the source is on (its agent copies it)")]
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

    def __post_init__(self) -> None:
        self.check_new_or_version(("template_name", "storage_id"), ("template_name",))


async def template_from_export(
    call: Call, body: OnNodeBody, ask: ExportAsk, file_name: Callable[[ExportSource], str]
) -> UploadResult:
    """The template (or a template's new version) made from what ``ask`` names on the body's
    node; ``file_name``: the upload's file name for the source the agent found."""
    template = None
    if body.template_id is not None:
        template, _ = await load_workable_template(call, body.template_id)
    plan = await _plan(call, body, template)
    agent = await agent_of(call, plan)
    try:
        source = await agent.check_export(ask)
    except (AgentError, AgentUnreachable) as exc:
        raise agent_refusal(exc, plan) from None
    name = file_name(source)
    upload = await reserve_for(call, body, plan, template, name, "qcow2")
    log.info(
        "upload %s: %s on %s%s for template %r",
        upload.id,
        describe(source),
        plan.import_node.node_name,
        f" at snapshot {source.snapshot}" if source.snapshot else "",
        upload.template_name,
    )
    staged = await stage_export(call, agent, upload.id, plan, ask, source, name)
    result = await record_and_answer(call, upload, plan, staged)
    return await after_import(call, result) if body.wait else result


async def _plan(call: Call, body: OnNodeBody, template: VmTemplate | None) -> UploadPlan:
    """What the template (or ``template``'s new version) will be made as, checked before the
    source is looked at (the VM options too: the same allowlist as an upload's)."""
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
