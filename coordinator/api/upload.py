"""POST /templates/upload: stream a disk image to the import node's agent, then import it.

The file part is never held in memory or written to the coordinator's disk:
chunks read from the client are written straight into the request to the
agent, which hashes, stores and validates them. Everything checkable is
checked before the first byte moves; a failure afterwards removes what the
upload made (template row, staged file) and keeps only a failed upload record.

An upload holds a slot while its bytes move (upload_slots.py: a limit in all and per
token, across replicas), a client that stops sending is dropped (client_idle.py), and the bytes read
from all clients together are held to ``max_upload_rate`` (shared/pacer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http import HttpProcessingError, HttpVersion11
from msgspec import Meta

from agent.client import AgentClient, AgentError, AgentUnreachable
from agent.validate import ImageRejected, declared_format
from coordinator import upload_progress, uploads
from coordinator.api.auth import authenticate
from coordinator.api.client_idle import ClientIdle, IdleWatch
from coordinator.api.errors import ApiError, error_response, retry_after_header
from coordinator.api.file_part import FilePartStream
from coordinator.api.routing import Call, Routes, parse_model
from coordinator.api.sync_tasks import SyncTaskBrief
from coordinator.api.templates import TemplateName
from coordinator.api.upload_to_agent import upload_to_agent
from coordinator.appkeys import AGENTS, CONFIG, DB, IMPORTS, UPLOAD_PACER, UPLOAD_SLOTS
from coordinator.db.models import TemplateUpload
from coordinator.errors import CoordinatorError
from coordinator.jobs import engine
from coordinator.jobs.template_import import VM_DEFAULTS, checked_options
from coordinator.states.upload import FINAL, UploadStatus
from coordinator.upload_plan import UploadPlan, plan_upload
from coordinator.upload_slots import UploadLimitReached
from shared import json_body
from shared.error_slugs import ErrorSlug
from shared.messages.uploads import Staged
from shared.pacer import Pacer
from shared.text_fields import DESCRIPTION_MAX, Description
from shared.validation import Checked, Input, Model
from shared.vm_config import SUMMARY as VM_CONFIG_SUMMARY
from shared.vm_config import VmConfig

log = logging.getLogger(__name__)
routes = Routes("templates")

FIELD_LIMIT = 64 << 10
# Multipart framing and form fields on top of the file itself.
FORM_OVERHEAD = 1 << 20


class NodeIds(list[int], Checked):
    """Node ids as a form sends them: "2,3", "[2,3]" or a JSON list."""

    json_schema = {"type": "array", "items": {"type": "integer", "minimum": 1}}

    @classmethod
    def parse(cls, raw: Any) -> NodeIds:
        items = raw
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("["):
                try:
                    items = json_body.decode(text.encode())
                except ValueError:
                    items = None
            else:
                items = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(items, list):
            raise ValueError("sync_node_ids must be a list of node ids like 2,3 or [2,3]")
        ids = cls()
        for item in items:
            if isinstance(item, bool) or not str(item).isdigit() or int(item) < 1:
                raise ValueError(f"sync_node_ids: {item!r} is not a node id (a positive integer)")
            ids.append(int(item))
        return ids


class UploadForm(Input):
    template_name: TemplateName
    cluster_id: Annotated[int, Meta(ge=1)]
    storage_id: Annotated[int, Meta(ge=1)]
    description: Description = Description("")
    auto_sync: bool = False
    sync_node_ids: NodeIds = msgspec.field(default_factory=NodeIds)
    vm_config: VmConfig = msgspec.field(default_factory=VmConfig)
    wait: bool = False


class UploadQuery(Input):
    """wait may come as a query parameter too (curl -F puts fields in the body)."""

    wait: Annotated[bool, Meta(description="answer after the import (as the form field wait)")] = False


def multipart_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """An upload's request body for the OpenAPI document: form fields, the file last."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


UPLOAD_FIELDS: dict[str, Any] = {
    "template_name": {"type": "string", "maxLength": 128},
    "cluster_id": {"type": "integer", "minimum": 1},
    "storage_id": {"type": "integer", "minimum": 1, "description": "a pve_storage id"},
    "description": {
        "type": "string",
        "maxLength": DESCRIPTION_MAX,
        "description": "newlines and tabs allowed, other control characters are not",
    },
    "auto_sync": {
        "type": "boolean",
        "description": "local storage: sync to every other node",
    },
    "sync_node_ids": {
        "type": "string",
        "description": "comma-separated node ids, or a JSON array",
    },
    "vm_config": {
        "type": "string",
        "description": f"{VM_CONFIG_SUMMARY} Defaults: "
        + ", ".join(f"{k}={v}" for k, v in VM_DEFAULTS.items()),
    },
    "wait": {"type": "boolean", "description": "answer after the import"},
    "file": {
        "type": "string",
        "format": "binary",
        "description": ".qcow2, .raw/.img or .vmdk; send it as the last field",
    },
}
UPLOAD_BODY_SCHEMA = multipart_body(["template_name", "cluster_id", "storage_id", "file"], UPLOAD_FIELDS)


class ImportNode(Model):
    node_id: int
    node_name: str


class UploadResult(Model):
    template_id: int
    version: Annotated[int, Meta(description="the template's version this upload is (1: a new template)")]
    upload_id: int
    storage_type: str
    is_shared: bool
    import_node: ImportNode
    sync_tasks: list[SyncTaskBrief]
    status: str
    error_message: str | None = None


def _limit(request: web.Request) -> int:
    return request.app[CONFIG].max_upload_bytes


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """Answer Expect: 100-continue with 401/403/413/429 before the client sends gigabytes."""
    if request.version != HttpVersion11:
        return None
    expect = request.headers.get("Expect", "").lower()
    if expect != "100-continue":
        return error_response(417, ErrorSlug.EXPECTATION_FAILED, f"unknown Expect: {expect}")
    try:
        principal = await authenticate(request, "operator")
        await request.app[UPLOAD_SLOTS].check(principal.token_id)
    except ApiError as exc:
        return error_response(exc.status, exc.error, exc.message)
    except UploadLimitReached as exc:
        return error_response(429, exc.error, exc.message, headers=retry_after_header(exc.retry_after))
    length = request.content_length
    if length is not None and length > _limit(request) + FORM_OVERHEAD:
        return error_response(
            413, ErrorSlug.TOO_LARGE, f"upload of {length} bytes exceeds the limit of {_limit(request)} bytes"
        )
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def _field_text(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(8192):
        data += chunk
        if len(data) > FIELD_LIMIT:
            raise ApiError(
                400, ErrorSlug.INVALID_REQUEST, f"form field {part.name} is longer than {FIELD_LIMIT} bytes"
            )
    return data.decode("utf-8", errors="replace")


def sanitise_file_name(raw: str | None) -> str:
    """A label for the record, never a path: last path element, safe characters only."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).lstrip(".")
    return name[:200] or "image"


class _TooLarge(CoordinatorError):
    pass


class Chunked(Protocol):
    def chunks(self) -> AsyncIterator[bytes | memoryview]: ...


class ClientBody:
    """The file (a multipart upload's file part, a tus PATCH's body), read off the connection
    as the body of the request to the agent; at most ``limit`` bytes.

    aiohttp's client turns whatever this body raises into a connection error
    (AgentUnreachable), so why it stopped is kept here: the handler must tell a
    file over the limit (413) and a client that went away from a failing agent.
    """

    def __init__(self, part: Chunked, limit: int, pacer: Pacer) -> None:
        self.part = part
        self.limit = limit
        self.pacer = pacer
        self.received = 0
        self.too_large = False
        self.client_error: BaseException | None = None

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        stream = self.part.chunks()
        while True:
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except Exception as exc:  # the client's connection broke (reset, truncated body)
                self.client_error = exc
                raise
            self.received += len(chunk)
            if self.received > self.limit:
                self.too_large = True
                raise _TooLarge
            # While a chunk is held here the client's next bytes wait: the cap slows the sender.
            await self.pacer.take(len(chunk))
            yield chunk


def _boundary(request: web.Request) -> str:
    return str(parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters["boundary"])


async def _read_form(request: web.Request, idle: IdleWatch) -> tuple[dict[str, Any], BodyPartReader]:
    """The form fields before the file, and the file part (its headers read, its data not)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, ErrorSlug.INVALID_REQUEST, "send the upload as multipart/form-data (curl -F)")
    try:
        with idle.waiting():
            return await _form_fields(request)
    except (ValueError, AssertionError) as exc:
        raise ApiError(400, ErrorSlug.INVALID_REQUEST, f"malformed multipart body: {exc}") from None
    except ClientIdle as exc:
        raise _dropped(exc) from None  # nothing was made yet: the slot is all it held
    except (ConnectionError, HttpProcessingError):
        # The client went away (or its body broke off) before the file: nothing was made yet.
        raise ApiError(400, ErrorSlug.INCOMPLETE, "the upload broke off before the file") from None


async def _form_fields(request: web.Request) -> tuple[dict[str, Any], BodyPartReader]:
    fields: dict[str, Any] = {}
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise ApiError(
                400,
                ErrorSlug.INVALID_REQUEST,
                "file is required (the disk image, as form field 'file')",
                {"fields": {"file": "is required"}},
            )
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, ErrorSlug.INVALID_REQUEST, "nested multipart bodies are not accepted")
        if part.name == "file":
            return fields, part
        if not part.name:
            raise ApiError(400, ErrorSlug.INVALID_REQUEST, "a form field has no name")
        if part.name in fields:  # (which one was meant? neither is taken silently)
            raise ApiError(
                400,
                ErrorSlug.INVALID_REQUEST,
                f"form field {part.name} is given more than once",
                {"fields": {part.name: "is given more than once"}},
            )
        fields[part.name] = await _field_text(part)


def _dropped(exc: ClientIdle) -> ApiError:
    return ApiError(408, ErrorSlug.CLIENT_IDLE, f"{exc}: the upload was dropped")


def upload_route(
    on: Routes, path: str, body_schema: dict[str, Any]
) -> Callable[[Callable[[Call], Awaitable[Any]]], Callable[[Call], Awaitable[Any]]]:
    """How a multipart upload is declared (a new template's, a new version's): the operator's,
    its answer, its refusals, and the early answer to Expect: 100-continue."""
    return on.post(
        path,
        role="operator",
        query=UploadQuery,
        response=UploadResult,
        errors=(400, 404, 408, 409, 413, 415, 422, 429, 502, 503, 507),
        raw_body_schema=body_schema,
        expect_handler=expect_upload,
    )


@upload_route(routes, "/templates/upload", UPLOAD_BODY_SCHEMA)
async def upload_template(call: Call) -> UploadResult:
    """Upload a disk image and import it as a PVE template.

    Form fields must come before the file. The answer comes once the file is
    stored and validated; the import runs as a durable job (upload_info.status).
    With wait=true (form field or query parameter) the answer comes after the import.
    A client that sends nothing for upload_idle_timeout seconds gets 408 and is dropped.
    """
    return await take_upload(call, NEW_TEMPLATE)


async def take_upload(call: Call, kind: UploadKind[Any]) -> UploadResult:
    """An upload of ``kind`` (a new template, a new version), from the first check to the
    answer: a slot held while the bytes move, the client dropped when it stops sending, and
    with wait=true the answer after the import."""
    request = call.request
    config = request.app[CONFIG]
    length = request.content_length
    if length is not None and length > config.max_upload_bytes + FORM_OVERHEAD:
        raise ApiError(
            413,
            ErrorSlug.TOO_LARGE,
            f"upload of {length} bytes exceeds the limit of {config.max_upload_bytes} bytes",
        )
    assert call.principal is not None  # (the route needs an operator)
    try:
        async with request.app[UPLOAD_SLOTS].hold(call.principal.token_id):
            async with IdleWatch(request.content, config.upload_idle_timeout).running() as idle:
                result, wait = await _upload(call, idle, kind)
    except UploadLimitReached as exc:
        raise ApiError(429, exc.error, exc.message, retry_after=exc.retry_after) from None
    # A slot bounds concurrent streams; waiting for the import (wait=true) must not hold one.
    return await after_import(call, result) if wait else result


async def after_import(call: Call, result: UploadResult) -> UploadResult:
    """``result`` once its import has ended (wait=true); a failed import is a 502 carrying it."""
    status, error_message = await wait_for_import(call, result.upload_id)
    result = msgspec.structs.replace(result, status=status, error_message=error_message)
    if status == UploadStatus.FAILED:
        raise ApiError(
            502,
            ErrorSlug.IMPORT_FAILED,
            error_message or "import failed",
            {"result": msgspec.to_builtins(result)},
        )
    return result


F = TypeVar("F", bound=Input)


@dataclass(frozen=True)
class UploadKind(Generic[F]):
    """What differs between uploads: the form's fields, the plan made from them, and the
    upload row reserved for the plan (a new template's, or a template's next version's)."""

    form: type[F]
    plan: Callable[[Call, F], Awaitable[UploadPlan]]
    reserve: Callable[[Call, F, UploadPlan, str, str], Awaitable[TemplateUpload]]
    wait: Callable[[F], bool]


async def _upload(call: Call, idle: IdleWatch, kind: UploadKind[F]) -> tuple[UploadResult, bool]:
    """Stream and record the upload; returns the answer and whether to wait for the import."""
    request = call.request
    form, file_part, file_name, fmt = await _read_upload_form(request, idle, kind.form)
    plan = await kind.plan(call, form)
    try:
        agent = await request.app[AGENTS].for_node(plan.import_node.id)
    except Exception as exc:
        raise ApiError(503, ErrorSlug.NO_LIVE_AGENT, str(exc)) from None
    upload = await kind.reserve(call, form, plan, file_name, fmt)
    log.info(
        "upload %s: %s (%s) for template %r (version %s) streaming to %s",
        upload.id,
        file_name,
        fmt,
        upload.template_name,
        upload.version,
        plan.import_node.node_name,
    )
    staged = await _stream(request, upload.id, agent, plan, file_name, fmt, idle)
    result = await record_and_answer(call, upload, plan, staged)
    return result, kind.wait(form) or call.query.wait


async def _read_upload_form(
    request: web.Request, idle: IdleWatch, form_type: type[F]
) -> tuple[F, BodyPartReader, str, str]:
    """The form (checked), the file part, its sanitised name and its declared format."""
    fields, file_part = await _read_form(request, idle)
    try:
        form = parse_model(form_type, fields, "form")
    except ApiError as exc:
        if fields:
            raise
        # Nothing came before the file: the fields are most likely after it (curl -F file=@x
        # first), where they are never read. Say so, not only that each one is missing.
        raise ApiError(
            400,
            exc.error,
            f"{exc.message} (form fields must come before the file: with curl, put -F file=@... last)",
            exc.extra,
        ) from None
    file_name = sanitise_file_name(file_part.filename)
    try:
        fmt = declared_format(file_name)
    except ImageRejected as exc:
        raise ApiError(exc.status, ErrorSlug.UNSUPPORTED_FORMAT, exc.reason) from None
    return form, file_part, file_name, fmt


async def _plan_template(call: Call, form: UploadForm) -> UploadPlan:
    return await _plan(call.request, form)


async def _reserve_template(
    call: Call, form: UploadForm, plan: UploadPlan, file_name: str, fmt: str
) -> TemplateUpload:
    incoming = incoming_of(call, file_name, fmt, form.vm_config, form.description)
    return await uploads.reserve(call.app[DB], plan, form.template_name, incoming)


def incoming_of(
    call: Call, file_name: str, fmt: str, vm_config: VmConfig, description: str
) -> uploads.Incoming:
    """What the upload's row records of this request."""
    lease = call.app[CONFIG].job_lease_seconds
    return uploads.Incoming(file_name, fmt, dict(vm_config), description, call.actor, lease)


async def _plan(request: web.Request, form: UploadForm) -> UploadPlan:
    """What the upload will do, checked before a byte moves (the VM options too)."""
    async with request.app[DB]() as session:
        plan = await plan_upload(
            session,
            template_name=form.template_name,
            cluster_id=form.cluster_id,
            storage_id=form.storage_id,
            sync_node_ids=form.sync_node_ids,
            auto_sync=form.auto_sync,
            agent_timeout=timedelta(seconds=request.app[CONFIG].agent_timeout),
        )
    check_vm_config(form.vm_config, plan)
    return plan


def check_vm_config(vm_config: VmConfig, plan: UploadPlan) -> None:
    """The VM options against the template's storage (its own volumes only), or a 400."""
    try:
        checked_options(vm_config, plan.storage.storage_name)
    except ValueError as exc:
        raise ApiError(
            400, ErrorSlug.INVALID_REQUEST, str(exc), {"fields": {"vm_config": str(exc)}}
        ) from None


async def _stream(
    request: web.Request,
    upload_id: int,
    agent: AgentClient,
    plan: UploadPlan,
    file_name: str,
    fmt: str,
    idle: IdleWatch,
) -> Staged:
    """The file part, streamed to the import node's agent, which stores and checks it; its
    answer (the staged image). On any failure the upload is abandoned (a failed record)."""
    config = request.app[CONFIG]
    db = request.app[DB]
    keeper = asyncio.create_task(
        engine.keep_lease(db, TemplateUpload, upload_id, config.job_lease_seconds, f"upload {upload_id}")
    )
    part = FilePartStream(request.content, _boundary(request), idle)
    body = ClientBody(part, config.max_upload_bytes, request.app[UPLOAD_PACER])
    progress = asyncio.create_task(
        upload_progress.report_received(db, upload_id, lambda: body.received, request.content_length or 0)
    )
    try:
        staged = await upload_to_agent(
            agent,
            upload_id,
            fmt,
            config.max_upload_bytes,
            config.max_virtual_size,
            body.chunks(),
            file_name,
            size_hint=request.content_length,  # the whole form's: a little more than the file
        )
        # Anything after the file would have been ignored: refuse it rather than drop it silently.
        if part.more_parts:
            await _quietly(agent.delete_staged(staged.staged_name))
            raise ApiError(
                400,
                ErrorSlug.INVALID_REQUEST,
                "form fields must come before the file (with curl, put -F file=@... last)",
            )
    except (AgentError, AgentUnreachable, ApiError) as exc:
        reason, error = _why_it_stopped(exc, body, request, plan)
        await uploads.abandon(db, upload_id, reason)
        if isinstance(exc, AgentUnreachable) and error.status in (400, 408):
            log.warning("upload %s: %s", upload_id, reason)  # the client's doing
        raise error from None
    except BaseException as exc:
        # Cancelled (shutting down) or a bug: leave nothing half-made either way.
        await asyncio.shield(uploads.abandon(db, upload_id, f"upload broke off: {exc.__class__.__name__}"))
        log.warning("upload %s broke off after %d bytes: %r", upload_id, body.received, exc)
        raise
    finally:
        keeper.cancel()
        progress.cancel()
    return staged


def _why_it_stopped(
    exc: AgentError | AgentUnreachable | ApiError, body: ClientBody, request: web.Request, plan: UploadPlan
) -> tuple[str, ApiError]:
    """Why a stream failed: the reason its failed record keeps, and the answer."""
    node = plan.import_node.node_name
    if isinstance(exc, ApiError):
        return exc.message, exc
    if isinstance(exc, AgentError):
        status = exc.status if exc.status in (400, 413, 415, 422, 507) else 502
        # The agent names what is full (its staging disk); which node it is, only we know.
        message = f"no space on {node}: {exc.message}" if status == 507 else exc.message
        return message, ApiError(status, exc.error, message)
    # The stream to the agent stopped: because of our side of it, or because of the agent.
    if body.too_large:
        limit = request.app[CONFIG].max_upload_bytes
        return "file too large", ApiError(
            413, ErrorSlug.TOO_LARGE, f"file exceeds the limit of {limit} bytes"
        )
    if isinstance(body.client_error, ClientIdle):
        reason = f"upload dropped: {body.client_error} (after {body.received} bytes)"
        return reason, _dropped(body.client_error)
    if body.client_error is not None or request.transport is None or request.transport.is_closing():
        reason = f"upload broke off: the client went away after {body.received} bytes"
        return reason, ApiError(400, ErrorSlug.INCOMPLETE, "the upload broke off")
    reason = f"agent of {node} failed: {exc}"
    return reason, ApiError(503, ErrorSlug.AGENT_FAILED, reason)


async def record_and_answer(
    call: Call, upload: TemplateUpload, plan: UploadPlan, staged: Staged
) -> UploadResult:
    """The image is stored: the rows that queue its import and its syncs; the answer."""
    planned = await uploads.record_staged(call.app[DB], upload.id, plan, staged, call.actor)
    sync = [
        SyncTaskBrief(
            task_id=p.task.id,
            target_node_id=p.node.id,
            target_node_name=p.node.node_name,
            status=p.task.status,
        )
        for p in planned
        if p.task is not None
    ]
    call.app[IMPORTS].wake()
    return UploadResult(
        template_id=upload.template_id or 0,
        version=upload.version,
        upload_id=upload.id,
        storage_type=plan.storage.type,
        is_shared=plan.storage.shared,
        import_node=ImportNode(node_id=plan.import_node.id, node_name=plan.import_node.node_name),
        sync_tasks=sync,
        status=UploadStatus.UPLOADED,
    )


async def _quietly(coro: Any) -> None:
    with contextlib.suppress(AgentError, AgentUnreachable):
        await coro


async def wait_for_import(call: Call, upload_id: int) -> tuple[str, str | None]:
    while True:
        async with call.app[DB]() as session:
            upload = await session.get(TemplateUpload, upload_id)
        assert upload is not None
        if upload.status in FINAL:
            return upload.status, upload.error_message
        transport = call.request.transport
        if transport is None or transport.is_closing():
            # Nobody is waiting for the answer any more; the import goes on regardless.
            return upload.status, upload.error_message
        await asyncio.sleep(0.5)


NEW_TEMPLATE = UploadKind(UploadForm, _plan_template, _reserve_template, lambda form: form.wait)
