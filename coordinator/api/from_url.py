"""POST /templates/from-url: a template from an image the import node's agent downloads
(contract 6.5: https, checked against the sha256 or sha512 the caller gives, resumed with
Range requests; once per cluster, then synced).

The upload's flow with the file replaced by a download (as from-vm replaces it by an export):
everything checkable is checked first (the body, then the plan: cluster, storage, sync nodes,
name, VM options); then the upload's rows are reserved (its file name: the URL's last path
element), the agent downloads the image into its staging under that upload's name, checks
the checksum and validates it like an upload, and the staged image is recorded and imported
exactly as an upload's is (one import, then peer-to-peer sync tasks). While it downloads, the
upload row's received/expected bytes move (upload_progress.py). Which hosts may be reached
is the agent's setting (download_hosts): a URL it will not fetch is its 400, passed on. A
download that fails is given up as a broken-off upload is: the partial file removed, the
template row gone, a failed upload record kept with the reason.

With ``template_id`` the image becomes that template's next version (contract 6.1), rolled
out as an uploaded version is (coordinator/api/versions.py).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import unquote, urlsplit

from msgspec import Meta

from agent.client import AgentClient
from coordinator import upload_progress
from coordinator.api.agent_staging import AgentOp, AsAnUpload, agent_of, reserve_for, stage_on_agent
from coordinator.api.routing import Call, Routes
from coordinator.api.templates import load_workable_template
from coordinator.api.upload import (
    UploadResult,
    after_import,
    check_vm_config,
    record_and_answer,
    sanitise_file_name,
)
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import VmTemplate
from coordinator.upload_plan import UploadPlan, plan_upload, plan_version
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.downloads import (
    FORMATS,
    DownloadFormat,
    DownloadRequest,
    DownloadUrl,
    DownloadView,
    Sha256Hex,
    Sha512Hex,
)
from shared.messages.uploads import Staged

log = logging.getLogger(__name__)
routes = Routes("templates")


def format_of_url(url: str) -> str | None:
    """The format the URL's path names by its suffix (.qcow2, .raw, .vmdk), else None (an
    ``.img`` may be either: Ubuntu's are qcow2)."""
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


class FromUrlBody(AsAnUpload):
    url: Annotated[
        DownloadUrl, Meta(description="https only; its host must be on the agent's download_hosts")
    ]
    sha256: Annotated[Sha256Hex | None, Meta(description="exactly one of sha256 and sha512")] = None
    sha512: Sha512Hex | None = None
    format: Annotated[
        DownloadFormat | None, Meta(description="default: the URL path's suffix (.qcow2, .raw, .vmdk)")
    ] = None
    cluster_id: Annotated[int, Meta(ge=1, description="required without template_id")] | None = None
    storage_id: Annotated[int, Meta(ge=1, description="required without template_id")] | None = None
    auto_sync: Annotated[bool, Meta(description="local storage: sync to every other node")] = False

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.sha512 is None):
            raise ValueError("give exactly one of sha256 and sha512 (the image's checksum, in hex)")
        if self.format is None and format_of_url(self.url) is None:
            raise ValueError(
                "format is required: the URL's path does not end in .qcow2, .raw or .vmdk "
                "(an .img may be qcow2 or raw: say which)"
            )
        self.check_new_or_version(
            ("template_name", "cluster_id", "storage_id"), ("template_name", "storage_id")
        )

    @property
    def image_format(self) -> str:
        return self.format or format_of_url(self.url) or ""


def file_name(url: str, fmt: str) -> str:
    """The upload's file name: the URL's last path element (for the record only)."""
    name = sanitise_file_name(unquote(urlsplit(url).path))
    return name if name != "image" else f"image.{fmt}"


@routes.post(
    "/templates/from-url",
    role="operator",
    body=FromUrlBody,
    response=UploadResult,
    errors=(400, 404, 409, 413, 422, 502, 503, 504, 507),
)
async def template_from_url(call: Call) -> UploadResult:
    """Make a template from an image at an https URL: the import node's agent downloads it
    (resuming a broken connection), checks it against the sha256 or sha512 given, validates
    it like an upload, and it is imported and synced as an upload is.

    The answer comes once the image is downloaded, checked and staged (with wait=true: after
    the import); its data is the upload's answer. A host not on the agent's download_hosts
    is a 400 naming it; a checksum that does not match is a 422 naming both.
    """
    body: FromUrlBody = call.body
    template = None
    if body.template_id is not None:
        template, _ = await load_workable_template(call, body.template_id)
    plan = await _plan(call, body, template)
    agent = await agent_of(call, plan)
    fmt = body.image_format
    name = file_name(body.url, fmt)
    upload = await reserve_for(call, body, plan, template, name, fmt)
    log.info(
        "upload %s: %s downloading %s for template %r (version %s)",
        upload.id,
        plan.import_node.node_name,
        body.url,
        upload.template_name,
        upload.version,
    )
    request = DownloadRequest(
        upload_id=upload.id,
        url=body.url,
        sha256=body.sha256,
        sha512=body.sha512,
        format=fmt,  # type: ignore[arg-type]  # (one of FORMATS: checked above)
        max_bytes=call.app[CONFIG].max_upload_bytes,
        max_virtual_size=call.app[CONFIG].max_virtual_size,
        label=name,
    )
    staged = await _download(call, agent, plan, request)
    result = await record_and_answer(call, upload, plan, staged)
    return await after_import(call, result) if body.wait else result


async def _plan(call: Call, body: FromUrlBody, template: VmTemplate | None) -> UploadPlan:
    """As an upload's plan (a new template's, or ``template``'s next version's)."""
    timeout = timedelta(seconds=call.app[CONFIG].agent_timeout)
    async with call.app[DB]() as session:
        if template is not None:
            plan = await plan_version(session, template, rollout=body.rollout, agent_timeout=timeout)
        else:
            assert body.cluster_id is not None and body.storage_id is not None  # (__post_init__)
            plan = await plan_upload(
                session,
                template_name=body.template_name or "",
                cluster_id=body.cluster_id,
                storage_id=body.storage_id,
                sync_node_ids=body.sync_node_ids,
                auto_sync=body.auto_sync,
                agent_timeout=timeout,
            )
    check_vm_config(body.vm_config, plan)
    return plan


class _Latest:
    """The agent's last word on the download: the bytes received, of how many."""

    view: DownloadView | None = None

    def saw(self, view: DownloadView) -> None:
        self.view = view

    def received(self) -> int:
        return self.view.received if self.view else 0

    def expected(self) -> int:
        return self.view.expected if self.view else 0


async def _download(call: Call, agent: AgentClient, plan: UploadPlan, request: DownloadRequest) -> Staged:
    """The image downloaded into the import node's staging as the upload's, its progress on
    the upload's row meanwhile. On any failure the download is stopped, its partial file
    removed, and the upload abandoned."""
    config = call.app[CONFIG]
    upload_id = request.upload_id
    latest = _Latest()
    progress = asyncio.create_task(
        upload_progress.report_received(call.app[DB], upload_id, latest.received, latest.expected)
    )
    op = AgentOp(
        upload_id,
        "download",
        ErrorSlug.DOWNLOAD_FAILED,
        lambda: agent.start_download(request),
        lambda: agent.get_download(upload_id),
        lambda reason: agent.cancel_download(upload_id, reason),
    )
    deadline = Deadline(
        scaled_timeout(config.import_timeout, config.import_seconds_per_gib, request.max_bytes)
    )
    try:
        return await stage_on_agent(call, agent, plan, op, deadline, latest.saw)
    finally:
        progress.cancel()
