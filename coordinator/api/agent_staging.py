"""An upload's image made on its import node's agent by an op the coordinator follows (an
export of a VM's disk, from_vm.py; a download from a URL, from_url.py): started, polled
until it ends, and given up cleanly on any failure (the op stopped, what it left removed,
the upload abandoned with the reason). The upload's lease is kept meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec
from msgspec import Meta

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator import uploads
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call
from coordinator.api.templates import TemplateName
from coordinator.api.upload import NodeIds, incoming_of
from coordinator.appkeys import AGENTS, CONFIG, DB
from coordinator.db.models import TemplateUpload, VmTemplate
from coordinator.jobs import engine
from coordinator.upload_plan import UploadPlan
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.exports import ExportAsk, ExportRequest, ExportSource
from shared.messages.uploads import Staged
from shared.text_fields import Description
from shared.validation import Input
from shared.vm_config import SUMMARY as VM_CONFIG_SUMMARY
from shared.vm_config import VmConfig

POLL_SECONDS = 0.5
# A refusal of the agent passed on with its own status; anything else is the agent failing.
PASSED_ON = (400, 404, 409, 413, 422, 503, 504, 507)


class OpView(Protocol):
    """What the agent says of an op (ExportView, DownloadView)."""

    @property
    def state(self) -> str: ...
    @property
    def staged(self) -> Staged | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def error_slug(self) -> ErrorSlug | None: ...
    @property
    def status(self) -> int | None: ...


V = TypeVar("V", bound=OpView)


@dataclass(frozen=True)
class AgentOp(Generic[V]):
    """How to start, follow and cancel one kind of op for upload ``upload_id``; ``what``
    names it in messages ("export"), ``slug`` is its failures' slug."""

    upload_id: int
    what: str
    slug: ErrorSlug
    start: Callable[[], Awaitable[V]]
    get: Callable[[], Awaitable[V]]
    cancel: Callable[[str], Awaitable[Any]]


class AsAnUpload(Input, kw_only=True):
    """The upload's own fields of a body whose image an agent makes (from-vm, from-url)."""

    template_name: Annotated[TemplateName | None, Meta(description="required without template_id")] = None
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
                description="make the image a new version of this template (on its storage), rolled "
                "out as an uploaded version is",
            ),
        ]
        | None
    ) = None
    rollout: Annotated[bool, Meta(description="with template_id: as a version upload's rollout")] = True
    wait: bool = False

    def check_new_or_version(self, required: tuple[str, ...], kept: tuple[str, ...]) -> None:
        """A new template needs the ``required`` fields; a new version (template_id) takes
        none of ``kept`` (its template's) nor sync_node_ids (it is rolled out)."""
        if self.template_id is None:
            missing = [name for name in required if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required for a new template "
                    "(or template_id, to make a new version of one)"
                )
        elif self.sync_node_ids or any(getattr(self, name) is not None for name in kept):
            raise ValueError(
                "with template_id the image is a new version of that template: leave out "
                f"{', '.join(kept)} and sync_node_ids (its name and storage are the template's, and "
                "it is rolled out to the nodes holding earlier versions)"
            )


async def reserve_for(
    call: Call,
    body: AsAnUpload,
    plan: UploadPlan,
    template: VmTemplate | None,
    name: str,
    fmt: str,
) -> TemplateUpload:
    """The upload's rows: a new template's, or ``template``'s next version's."""
    incoming = incoming_of(call, name, fmt, body.vm_config, body.description or "")
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


async def stage_on_agent(
    call: Call,
    agent: AgentClient,
    plan: UploadPlan,
    op: AgentOp[V],
    deadline: Deadline,
    seen: Callable[[V], None] = lambda view: None,
) -> Staged:
    """The op's staged image (``seen`` told every view on the way). On any failure the op is
    stopped, what it left removed, and the upload abandoned. ``deadline`` covers an agent
    gone silent (its own deadline ends the op first)."""
    config, db = call.app[CONFIG], call.app[DB]
    upload_id = op.upload_id
    keeper = asyncio.create_task(
        engine.keep_lease(db, TemplateUpload, upload_id, config.job_lease_seconds, f"upload {upload_id}")
    )
    try:
        view = await op.start()
        seen(view)
        while view.state == "running":
            if deadline.passed():
                raise ApiError(504, op.slug, f"the {op.what} {deadline.missed()}")
            await asyncio.sleep(POLL_SECONDS)
            view = await op.get()
            seen(view)
        if view.state == "failed" or view.staged is None:
            status = view.status if view.status in PASSED_ON else 502
            raise ApiError(status, view.error_slug or op.slug, view.error or f"{op.what} failed")
        return view.staged
    except (AgentError, AgentUnreachable, ApiError) as exc:
        error = exc if isinstance(exc, ApiError) else agent_refusal(exc, plan)
        await _give_up(db, agent, op, error.message)
        raise error from None
    except BaseException as exc:
        # Cancelled (shutting down) or a bug: leave nothing half-made either way.
        await asyncio.shield(_give_up(db, agent, op, f"{op.what} broke off: {exc.__class__.__name__}"))
        raise
    finally:
        keeper.cancel()


async def stage_export(
    call: Call,
    agent: AgentClient,
    upload_id: int,
    plan: UploadPlan,
    ask: ExportAsk,
    source: ExportSource,
    label: str,
) -> Staged:
    """What ``ask`` names (a VM's disk, a volume) exported into the import node's staging as
    upload ``upload_id``'s image (``label`` names it in the agent's messages), within a
    deadline scaled by its size. On any failure the export is stopped, what it left removed,
    and the upload abandoned."""
    config = call.app[CONFIG]
    request = ExportRequest(
        upload_id=upload_id,
        vmid=ask.vmid,
        disk=ask.disk,
        snapshot=ask.snapshot,
        volume=ask.volume,
        max_virtual_size=config.max_virtual_size,
        label=label,
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


async def _give_up(db: Any, agent: AgentClient, op: AgentOp[Any], reason: str) -> None:
    """Stop the op and remove whatever it left on the agent; abandon the upload."""
    with contextlib.suppress(AgentError, AgentUnreachable):
        await op.cancel(reason[:200])
    with contextlib.suppress(AgentError, AgentUnreachable):
        await agent.delete_upload(op.upload_id)
    await uploads.abandon(db, op.upload_id, reason)
