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
import contextlib
import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import msgspec
from msgspec import Meta

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator import upload_progress, uploads
from coordinator.api.errors import ApiError
from coordinator.api.from_vm import PASSED_ON, POLL_SECONDS, agent_of, agent_refusal
from coordinator.api.routing import Call, Routes
from coordinator.api.templates import TemplateName, load_workable_template
from coordinator.api.upload import (
    NodeIds,
    UploadResult,
    after_import,
    check_vm_config,
    incoming_of,
    record_and_answer,
    sanitise_file_name,
)
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import TemplateUpload, VmTemplate
from coordinator.jobs import engine
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
from shared.text_fields import Description
from shared.validation import Input
from shared.vm_config import SUMMARY as VM_CONFIG_SUMMARY
from shared.vm_config import VmConfig

log = logging.getLogger(__name__)
routes = Routes("templates")


def format_of_url(url: str) -> str | None:
    """The format the URL's path names by its suffix (.qcow2, .raw, .vmdk), else None (an
    ``.img`` may be either: Ubuntu's are qcow2)."""
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


class FromUrlBody(Input):
    url: Annotated[
        DownloadUrl, Meta(description="https only; its host must be on the agent's download_hosts")
    ]
    sha256: Annotated[Sha256Hex | None, Meta(description="exactly one of sha256 and sha512")] = None
    sha512: Sha512Hex | None = None
    format: Annotated[
        DownloadFormat | None, Meta(description="default: the URL path's suffix (.qcow2, .raw, .vmdk)")
    ] = None
    cluster_id: Annotated[int, Meta(ge=1, description="required without template_id")] | None = None
    template_name: Annotated[TemplateName | None, Meta(description="required without template_id")] = None
    storage_id: Annotated[int, Meta(ge=1, description="required without template_id")] | None = None
    description: Description | None = None
    sync_node_ids: NodeIds = msgspec.field(default_factory=NodeIds)
    vm_config: Annotated[VmConfig, Meta(description=f"as the upload's: {VM_CONFIG_SUMMARY}")] = msgspec.field(
        default_factory=VmConfig
    )
    template_id: (
        Annotated[
            int,
            Meta(ge=1, description="make the image a new version of this template (on its storage)"),
        ]
        | None
    ) = None
    rollout: Annotated[bool, Meta(description="with template_id: as a version upload's rollout")] = True
    wait: bool = False

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.sha512 is None):
            raise ValueError("give exactly one of sha256 and sha512 (the image's checksum, in hex)")
        if self.format is None and format_of_url(self.url) is None:
            raise ValueError(
                "format is required: the URL's path does not end in .qcow2, .raw or .vmdk "
                "(an .img may be qcow2 or raw: say which)"
            )
        if self.template_id is None:
            missing = [n for n in ("template_name", "cluster_id", "storage_id") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required for a new template "
                    "(or template_id, to make a new version of one)"
                )
        elif self.template_name is not None or self.sync_node_ids or self.storage_id is not None:
            raise ValueError(
                "with template_id the image is a new version of that template: its name and "
                "storage stay, and it is rolled out to the nodes holding earlier versions (leave "
                "out template_name, storage_id and sync_node_ids)"
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
    incoming = incoming_of(call, name, fmt, body.vm_config, body.description or "")
    if template is None:
        upload = await uploads.reserve(call.app[DB], plan, body.template_name or "", incoming)
    else:
        upload = await uploads.reserve_version(call.app[DB], plan, template, incoming)
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
                auto_sync=False,
                agent_timeout=timeout,
            )
    check_vm_config(body.vm_config, plan)
    return plan


async def _download(call: Call, agent: AgentClient, plan: UploadPlan, request: DownloadRequest) -> Staged:
    """The image downloaded into the import node's staging as the upload's; its progress on
    the upload's row. On any failure the download is stopped, its partial file removed, and
    the upload abandoned."""
    config, db = call.app[CONFIG], call.app[DB]
    upload_id = request.upload_id
    keeper = asyncio.create_task(
        engine.keep_lease(db, TemplateUpload, upload_id, config.job_lease_seconds, f"upload {upload_id}")
    )
    seen: list[DownloadView] = []
    progress = asyncio.create_task(
        upload_progress.report_received(
            db,
            upload_id,
            lambda: seen[-1].received if seen else 0,
            lambda: seen[-1].expected if seen else 0,
        )
    )
    # The agent's own deadline ends the download first; this one covers an agent gone silent.
    deadline = Deadline(
        scaled_timeout(config.import_timeout, config.import_seconds_per_gib, request.max_bytes)
    )
    try:
        seen.append(await agent.start_download(request))
        while seen[-1].state == "running":
            if deadline.passed():
                raise ApiError(504, ErrorSlug.DOWNLOAD_FAILED, f"the download {deadline.missed()}")
            await asyncio.sleep(POLL_SECONDS)
            seen.append(await agent.get_download(upload_id))
            del seen[:-1]
        view = seen[-1]
        if view.state == "failed" or view.staged is None:
            status = view.status if view.status in PASSED_ON else 502
            raise ApiError(
                status, view.error_slug or ErrorSlug.DOWNLOAD_FAILED, view.error or "download failed"
            )
        return view.staged
    except (AgentError, AgentUnreachable, ApiError) as exc:
        error = exc if isinstance(exc, ApiError) else agent_refusal(exc, plan)
        await _give_up(db, agent, upload_id, error.message)
        raise error from None
    except BaseException as exc:
        # Cancelled (shutting down) or a bug: leave nothing half-made either way.
        await asyncio.shield(_give_up(db, agent, upload_id, f"download broke off: {exc.__class__.__name__}"))
        raise
    finally:
        keeper.cancel()
        progress.cancel()


async def _give_up(db: Any, agent: AgentClient, upload_id: int, reason: str) -> None:
    """Stop the download and remove whatever it left on the agent; abandon the upload."""
    with contextlib.suppress(AgentError, AgentUnreachable):
        await agent.cancel_download(upload_id, reason[:200])
    with contextlib.suppress(AgentError, AgentUnreachable):
        await agent.delete_upload(upload_id)
    await uploads.abandon(db, upload_id, reason)
