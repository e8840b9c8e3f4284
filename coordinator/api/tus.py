"""/uploads: resumable uploads with the tus 1.0.0 protocol (contract 6.5; shared/tus.py).

POST /uploads creates one (creation: Upload-Length, and in Upload-Metadata the multipart
upload's form fields, ``filename`` for the file's name, ``template_id`` for a new version),
checked exactly as a multipart upload is (api/upload.py's kinds: the same form, plan and
reservation) before anything is made; the import node's agent makes its partial file with
room for the whole length. PATCH appends at the offset the agent holds, streamed through as
a multipart upload's file is (slot, idle client dropped, rate cap, deadlines on the agent);
a PATCH cut off keeps what arrived. The last byte is hashed and validated on the agent and
then recorded as any upload is (uploads.record_staged: import, instances, sync tasks). HEAD
says the offset, DELETE gives the upload up (termination), and one idle past its
Upload-Expires is given up by the janitor (expiration; coordinator/resumable.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from aiohttp import web
from sqlalchemy import select

from agent.client import AgentClient, AgentError, AgentUnreachable
from agent.validate import ImageRejected, declared_format
from coordinator import resumable, upload_progress, uploads
from coordinator.api.agent_staging import agent_of
from coordinator.api.client_idle import ClientIdle, IdleWatch
from coordinator.api.errors import ApiError, error_response, from_refusal, retry_after_header
from coordinator.api.file_part import RawBodyStream
from coordinator.api.routing import Call, Routes, parse_model
from coordinator.api.sync_tasks import SyncTaskBrief
from coordinator.api.upload import (
    NEW_TEMPLATE,
    ClientBody,
    ImportNode,
    UploadForm,
    UploadKind,
    UploadResult,
    sanitise_file_name,
)
from coordinator.api.upload_to_agent import bounded_send
from coordinator.api.versions import NEW_VERSION, VersionForm
from coordinator.appkeys import AGENTS, CONFIG, DB, IMPORTS, UPLOAD_PACER, UPLOAD_SLOTS
from coordinator.db.models import TemplateSyncTask
from coordinator.errors import Refusal
from coordinator.resumable import Resumable
from coordinator.states.upload import UploadStatus
from coordinator.upload_slots import UploadLimitReached
from shared.deadlines import upload_answer_seconds
from shared.error_slugs import ErrorSlug
from shared.messages.uploads import ResumablePatched
from shared.tus import (
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    TusHeaderError,
    check_patch,
    http_date,
    parse_metadata,
    read_number,
)
from shared.validation import Input

log = logging.getLogger(__name__)
routes = Routes("uploads")

# Metadata keys that name the file (tus clients' habits: tus-js-client and Uppy send both).
FILE_NAME_KEYS = ("filename", "name")
# ...and keys clients add that say nothing we use (the content type: the suffix decides).
IGNORED_KEYS = ("filetype", "type")
# How long a PATCH (or DELETE) waits for the one before it to let go of the upload.
TURN_WAIT = 5.0
STORED = (UploadStatus.UPLOADED, UploadStatus.IMPORTING, UploadStatus.IMPORTED)

TUS_HEADER = {"Tus-Resumable": {"schema": {"type": "string", "const": TUS_VERSION}}}
OFFSET_HEADER = {"Upload-Offset": {"schema": {"type": "integer", "minimum": 0}}}
EXPIRES_HEADER = {"Upload-Expires": {"description": "RFC 7231 date", "schema": {"type": "string"}}}


VERSION_PARAM = {"Tus-Resumable": {"required": True, "schema": {"type": "string", "const": TUS_VERSION}}}


def _answer(status: int, description: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {str(status): {"description": description, "headers": {**TUS_HEADER, **headers}}}


def _tus(
    handler: Callable[[Call], Awaitable[web.StreamResponse]],
) -> Callable[[Call], Awaitable[web.StreamResponse]]:
    """A tus handler: its request's Tus-Resumable checked, and every answer carrying the header
    (the error envelope too)."""

    @wraps(handler)
    async def answer(call: Call) -> web.StreamResponse:
        headers = {"Tus-Resumable": TUS_VERSION}
        try:
            asked = call.request.headers.get("Tus-Resumable")
            if asked != TUS_VERSION:
                raise ApiError(
                    412,
                    ErrorSlug.INVALID_REQUEST,
                    f"Tus-Resumable must be {TUS_VERSION} (got {asked!r})",
                    {"fields": {"Tus-Resumable": f"must be {TUS_VERSION}"}},
                )
            response = await handler(call)
        except (ApiError, Refusal) as raised:
            exc = from_refusal(raised) if isinstance(raised, Refusal) else raised
            if exc.status == 412:
                headers["Tus-Version"] = TUS_VERSION
            if exc.retry_after is not None:
                headers |= retry_after_header(exc.retry_after)
            return error_response(exc.status, exc.error, exc.message, exc.extra, headers)
        response.headers.update(headers)
        return response

    return answer


def _header_error(exc: TusHeaderError, header: str) -> ApiError:
    return ApiError(400, ErrorSlug.INVALID_REQUEST, str(exc), {"fields": {header: str(exc)}})


def _no_content(**headers: str) -> web.Response:
    return web.Response(status=204, headers={"Cache-Control": "no-store", **headers})


@routes.options(
    "/uploads",
    role="operator",
    raw_responses=_answer(
        204,
        "What this tus server supports",
        {
            "Tus-Version": {"schema": {"type": "string"}},
            "Tus-Extension": {"schema": {"type": "string"}},
            "Tus-Max-Size": {"schema": {"type": "integer"}},
        },
    ),
)
async def tus_options(call: Call) -> web.StreamResponse:
    """The tus protocol's discovery: versions, extensions, the largest upload."""
    # (Tus-Resumable is not asked of an OPTIONS request: discovery comes before a version.)
    return _no_content(
        **{
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(call.app[CONFIG].max_upload_bytes),
        }
    )


@routes.post(
    "/uploads",
    role="operator",
    headers={
        **VERSION_PARAM,
        "Upload-Length": {"required": True, "schema": {"type": "integer", "minimum": 1}},
        "Upload-Metadata": {
            "required": True,
            "description": "comma-separated 'key base64(value)' pairs: filename and the upload's fields",
            "schema": {"type": "string"},
        },
    },
    errors=(400, 404, 409, 412, 413, 415, 429, 502, 503, 507),
    raw_responses=_answer(
        201,
        "Created: PATCH the bytes to its Location",
        {"Location": {"schema": {"type": "string"}}, **EXPIRES_HEADER},
    ),
)
@_tus
async def create_upload(call: Call) -> web.StreamResponse:
    """Create a resumable upload (tus creation).

    Upload-Length (required) is the file's size in bytes. Upload-Metadata carries the
    multipart upload's form fields (template_name, cluster_id, storage_id, description,
    auto_sync, sync_node_ids, vm_config; or template_id with description, vm_config and
    rollout for a template's next version) and ``filename``, whose suffix names the format.
    Each is checked as the multipart upload checks it, before anything is made.
    """
    request = call.request
    config = call.app[CONFIG]
    if "Upload-Defer-Length" in request.headers:
        raise ApiError(
            400, ErrorSlug.INVALID_REQUEST, "Upload-Defer-Length is not supported: send Upload-Length"
        )
    try:
        length = read_number("Upload-Length", request.headers.get("Upload-Length"))
    except TusHeaderError as exc:
        raise _header_error(exc, "Upload-Length") from None
    if length == 0:
        raise ApiError(400, ErrorSlug.INVALID_REQUEST, "Upload-Length is 0: an image has bytes")
    if length > config.max_upload_bytes:
        raise ApiError(
            413,
            ErrorSlug.TOO_LARGE,
            f"upload of {length} bytes exceeds the limit of {config.max_upload_bytes} bytes",
        )
    try:
        fields = parse_metadata(request.headers.get("Upload-Metadata"))
    except TusHeaderError as exc:
        raise _header_error(exc, "Upload-Metadata") from None
    file_name, fmt = _file_of(fields)
    kind, kind_call, form = _kind_of(call, fields)
    plan = await kind.plan(kind_call, form)
    agent = await agent_of(call, plan)
    upload = await kind.reserve(kind_call, form, plan, file_name, fmt)
    try:
        sync_node_ids, auto_sync, rollout = _plan_inputs(form)
        expires = await resumable.open_upload(
            call.app[DB], upload.id, length, sync_node_ids, auto_sync, rollout, config.resumable_upload_expiry
        )
        await agent.create_resumable(upload.id, length, config.max_upload_bytes)
    except (AgentError, AgentUnreachable) as exc:
        error = _agent_refusal(exc, plan.import_node.node_name)
        await _give_up(call, agent, upload.id, error.message)
        raise error from None
    except BaseException as exc:
        await asyncio.shield(
            _give_up(call, agent, upload.id, f"creation broke off: {exc.__class__.__name__}")
        )
        raise
    log.info(
        "resumable upload %s: %s (%s, %d bytes) for template %r (version %s) on %s",
        upload.id,
        file_name,
        fmt,
        length,
        upload.template_name,
        upload.version,
        plan.import_node.node_name,
    )
    location = f"{request.path.rstrip('/')}/{upload.id}"
    return web.Response(
        status=201, headers={"Location": location, "Upload-Expires": http_date(expires), "Upload-Offset": "0"}
    )


def _file_of(fields: dict[str, str]) -> tuple[str, str]:
    """The file's name (a label, sanitised) and its declared format, from the metadata."""
    named = [fields.pop(key) for key in FILE_NAME_KEYS if key in fields]
    for key in IGNORED_KEYS:
        fields.pop(key, None)
    if not named or not named[0].strip():
        raise ApiError(
            400,
            ErrorSlug.INVALID_REQUEST,
            "Upload-Metadata needs filename (the image's file name: its suffix names the format)",
            {"fields": {"filename": "is required"}},
        )
    file_name = sanitise_file_name(named[0])
    try:
        return file_name, declared_format(file_name)
    except ImageRejected as exc:
        raise ApiError(exc.status, ErrorSlug.UNSUPPORTED_FORMAT, exc.reason) from None


def _kind_of(call: Call, fields: dict[str, str]) -> tuple[UploadKind[Any], Call, Input]:
    """A new template's upload, or (template_id) a template's next version's: its kind, the
    call its plan reads, and its form checked as the multipart upload checks it."""
    if "wait" in fields:
        raise ApiError(
            400,
            ErrorSlug.INVALID_REQUEST,
            "wait does not apply to a resumable upload: follow upload_info after the last PATCH",
            {"fields": {"wait": "not accepted here"}},
        )
    raw_id = fields.pop("template_id", None)
    if raw_id is None:
        return NEW_TEMPLATE, call, parse_model(UploadForm, fields, "metadata")
    if not raw_id.isascii() or not raw_id.isdigit() or not 1 <= int(raw_id) <= 2**31 - 1:
        raise ApiError(
            400,
            ErrorSlug.INVALID_REQUEST,
            f"template_id must be a positive integer (got {raw_id[:40]!r})",
            {"fields": {"template_id": "must be a positive integer"}},
        )
    form = parse_model(VersionForm, fields, "metadata")
    return NEW_VERSION, dataclasses.replace(call, path={"id": int(raw_id)}), form


def _plan_inputs(form: Input) -> tuple[list[int], bool, bool]:
    """What the plan is rebuilt from at the last byte: sync_node_ids, auto_sync (a new
    template's), rollout (a new version's)."""
    if isinstance(form, UploadForm):
        return list(form.sync_node_ids), form.auto_sync, True
    assert isinstance(form, VersionForm)
    return [], False, form.rollout


async def _find(call: Call) -> Resumable:
    found = await resumable.find(call.app[DB], call.path["id"])
    if found is None:
        raise ApiError(404, ErrorSlug.UPLOAD_NOT_FOUND, f"resumable upload {call.path['id']} not found")
    return found


def _refuse_ended(found: Resumable) -> None:
    """410 for an upload given up (terminated, expired, refused); 409 for a stored one."""
    status = found.upload.status
    if status in STORED:
        raise ApiError(
            409,
            ErrorSlug.BAD_OFFSET,
            f"upload {found.upload.id} is complete ({status}): all {found.length} bytes are in",
        )
    if status != UploadStatus.UPLOADING:
        raise ApiError(
            410,
            ErrorSlug.UPLOAD_ABANDONED,
            f"upload {found.upload.id} was given up: {found.upload.error_message or status}",
        )


async def _agent_of(call: Call, found: Resumable) -> AgentClient:
    try:
        return await call.app[AGENTS].for_node(found.upload.import_node_id)
    except Exception as exc:
        raise ApiError(
            503, ErrorSlug.NO_LIVE_AGENT, f"{exc} (it holds the upload's bytes; try again later)"
        ) from None


ANSWERED_HEADERS = {
    **OFFSET_HEADER,
    "Upload-Length": {"schema": {"type": "integer"}},
    **EXPIRES_HEADER,
}


@routes.head(
    "/uploads/{id}",
    role="operator",
    headers=VERSION_PARAM,
    errors=(404, 410, 412, 423, 503),
    raw_responses=_answer(200, "Where the upload stands: send from Upload-Offset on", ANSWERED_HEADERS),
)
@_tus
async def upload_offset(call: Call) -> web.StreamResponse:
    """How many bytes of a resumable upload are stored (tus HEAD): PATCH from Upload-Offset."""
    found = await _find(call)
    headers = {"Upload-Length": str(found.length), "Cache-Control": "no-store"}
    if found.upload.status in STORED:
        return web.Response(status=200, headers={**headers, "Upload-Offset": str(found.length)})
    _refuse_ended(found)
    held = await _held(call, await _agent_of(call, found), found)
    if found.expires_at is not None:
        headers["Upload-Expires"] = http_date(found.expires_at)
    return web.Response(status=200, headers={**headers, "Upload-Offset": str(held)})


async def _held(call: Call, agent: AgentClient, found: Resumable) -> int:
    """The bytes the import node's agent holds (the upload's offset); an agent that no longer
    holds any (its staging lost) ends the upload: 410."""
    try:
        return (await agent.resumable_offset(found.upload.id)).offset
    except AgentError as exc:
        if exc.status == 404:
            reason = f"{found.upload.import_node_name} no longer holds the upload's bytes"
            await _give_up(call, agent, found.upload.id, reason)
            raise ApiError(410, ErrorSlug.UPLOAD_ABANDONED, reason) from None
        raise _agent_refusal(exc, found.upload.import_node_name) from None
    except AgentUnreachable as exc:
        raise _agent_refusal(exc, found.upload.import_node_name) from None


@routes.get("/uploads/{id}", role="viewer", response=UploadResult, errors=(404,))
async def get_upload(call: Call) -> UploadResult:
    """What a resumable upload became: the answer a multipart upload gives (its template,
    version, import node, sync tasks, status), for a client whose last PATCH answered 204."""
    found = await _find(call)
    upload = found.upload
    async with call.app[DB]() as session:
        tasks = list(
            await session.scalars(
                select(TemplateSyncTask)
                .where(TemplateSyncTask.upload_id == upload.id)
                .order_by(TemplateSyncTask.id)
            )
        )
    return UploadResult(
        template_id=upload.template_id or 0,
        version=upload.version,
        upload_id=upload.id,
        storage_type=upload.storage_type,
        is_shared=upload.is_shared,
        import_node=ImportNode(node_id=upload.import_node_id, node_name=upload.import_node_name),
        sync_tasks=[
            SyncTaskBrief(
                task_id=t.id,
                target_node_id=t.target_node_id,
                target_node_name=t.target_node_name,
                status=t.status,
            )
            for t in tasks
        ],
        status=upload.status,
        error_message=upload.error_message,
    )


@routes.patch(
    "/uploads/{id}",
    role="operator",
    headers={
        **VERSION_PARAM,
        "Upload-Offset": {"required": True, "schema": {"type": "integer", "minimum": 0}},
    },
    raw_body_schema={
        "required": True,
        "content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    errors=(400, 404, 408, 409, 410, 412, 413, 415, 422, 423, 429, 503, 507),
    raw_responses=_answer(204, "Stored: the upload's new offset", {**OFFSET_HEADER, **EXPIRES_HEADER}),
)
@_tus
async def upload_bytes(call: Call) -> web.StreamResponse:
    """Append bytes to a resumable upload (tus PATCH, Content-Type application/offset+octet-stream).

    Upload-Offset must be the upload's offset (HEAD), else 409 naming both. One PATCH at a
    time (423 while another runs). A PATCH cut off keeps the bytes that arrived. The last
    byte is answered once the whole image is hashed and validated (a refused image: 422, the
    upload given up); its import then runs as a multipart upload's does.
    """
    request = call.request
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise ApiError(
            415, ErrorSlug.INVALID_REQUEST, f"a PATCH's Content-Type must be {OFFSET_CONTENT_TYPE}"
        )
    try:
        offset = read_number("Upload-Offset", request.headers.get("Upload-Offset"))
    except TusHeaderError as exc:
        raise _header_error(exc, "Upload-Offset") from None
    found = await _find(call)
    _refuse_ended(found)
    too_far = check_patch(offset, offset, found.length, request.content_length)
    if too_far is not None:
        raise ApiError(413, ErrorSlug.TOO_LARGE, too_far)
    db, config = call.app[DB], call.app[CONFIG]
    owner = resumable.patch_owner()
    if not await resumable.claim_patch(db, found.upload.id, owner, config.job_lease_seconds, TURN_WAIT):
        raise ApiError(423, ErrorSlug.UPLOAD_RUNNING, f"another PATCH of upload {found.upload.id} is running")
    try:
        assert call.principal is not None  # (the route needs an operator)
        async with call.app[UPLOAD_SLOTS].hold(call.principal.token_id):
            return await _patch(call, found, offset, owner)
    except UploadLimitReached as exc:
        raise ApiError(429, exc.error, exc.message, retry_after=exc.retry_after) from None
    finally:
        await asyncio.shield(resumable.end_patch(db, found.upload.id, owner))


async def _patch(call: Call, found: Resumable, offset: int, owner: str) -> web.StreamResponse:
    """The body streamed to the agent holding the upload, with every deadline an upload has."""
    request, db, config = call.request, call.app[DB], call.app[CONFIG]
    upload = found.upload
    expiry = config.resumable_upload_expiry
    if await resumable.wait_for_patch(db, upload.id, expiry, None) is None:
        raise ApiError(410, ErrorSlug.UPLOAD_ABANDONED, f"upload {upload.id} was given up meanwhile")
    agent = await _agent_of(call, found)
    # A wrong offset is answered before a byte of the body is read (the agent checks again).
    wrong = check_patch(offset, await _held(call, agent, found), found.length, request.content_length)
    if wrong is not None:
        raise ApiError(409, ErrorSlug.BAD_OFFSET, wrong)
    keeper = asyncio.create_task(
        resumable.keep_patching(db, upload.id, owner, config.job_lease_seconds, expiry)
    )
    async with IdleWatch(request.content, config.upload_idle_timeout).running() as idle:
        body = ClientBody(RawBodyStream(request.content, idle), found.length - offset, call.app[UPLOAD_PACER])
        progress = asyncio.create_task(
            upload_progress.report_received(db, upload.id, lambda: offset + body.received, found.length)
        )
        try:
            patched = await bounded_send(
                lambda chunks: agent.patch_resumable(
                    upload.id,
                    offset,
                    found.length,
                    upload.file_format,
                    config.max_virtual_size,
                    chunks,
                    upload.file_name,
                ),
                body.chunks(),
                # The last byte's answer waits for the whole image's hash and checks.
                answer_seconds=lambda sent: upload_answer_seconds(found.length),
            )
        except (AgentError, AgentUnreachable) as exc:
            raise await _patch_failed(call, agent, found, exc, body) from None
        finally:
            keeper.cancel()
            progress.cancel()
    return await _patched(call, agent, found, patched)


async def _patch_failed(
    call: Call, agent: AgentClient, found: Resumable, exc: AgentError | AgentUnreachable, body: ClientBody
) -> ApiError:
    """The answer to a PATCH that did not end well. The upload goes on (the bytes that came
    are kept) unless the image was refused."""
    node = found.upload.import_node_name
    if isinstance(exc, AgentError):
        if exc.status in (415, 422):  # the complete image, refused: as a multipart upload's
            await _give_up(call, agent, found.upload.id, exc.message)
        return _agent_refusal(exc, node)
    if isinstance(body.client_error, ClientIdle):
        return ApiError(408, ErrorSlug.CLIENT_IDLE, f"{body.client_error}: HEAD says where to go on")
    if body.client_error is not None or body.too_large:
        log.info("resumable upload %s: a PATCH broke off after %d bytes", found.upload.id, body.received)
        return ApiError(400, ErrorSlug.INCOMPLETE, "the PATCH broke off: HEAD says where to go on")
    return _agent_refusal(exc, node)


async def _patched(
    call: Call, agent: AgentClient, found: Resumable, patched: ResumablePatched
) -> web.Response:
    """The agent's answer: the new offset, or the staged image recorded as any upload's is."""
    db, upload = call.app[DB], found.upload
    if patched.staged is None:
        expires = await resumable.wait_for_patch(
            db, upload.id, call.app[CONFIG].resumable_upload_expiry, patched.offset
        )
        headers = {"Upload-Offset": str(patched.offset)}
        return _no_content(**headers, **({"Upload-Expires": http_date(expires)} if expires else {}))
    try:
        plan = await resumable.plan_of(db, found)
        await uploads.record_staged(db, upload.id, plan, patched.staged, call.actor)
    except Refusal as exc:  # the plan no longer holds (a sync node gone), or given up meanwhile
        await _give_up(call, agent, upload.id, str(exc))
        raise
    call.app[IMPORTS].wake()
    return _no_content(**{"Upload-Offset": str(patched.offset)})


@routes.delete(
    "/uploads/{id}",
    role="operator",
    headers=VERSION_PARAM,
    errors=(404, 409, 410, 412, 423),
    raw_responses=_answer(204, "Terminated: its bytes removed, its template row too (a first upload's)", {}),
)
@_tus
async def terminate_upload(call: Call) -> web.StreamResponse:
    """Give a resumable upload up (tus termination): as an upload that broke off, its files
    removed and a failed record kept."""
    found = await _find(call)
    _refuse_ended(found)
    lease = call.app[CONFIG].job_lease_seconds
    if not await resumable.claim_patch(
        call.app[DB], found.upload.id, resumable.patch_owner(), lease, TURN_WAIT
    ):
        raise ApiError(423, ErrorSlug.UPLOAD_RUNNING, f"a PATCH of upload {found.upload.id} is running")
    try:
        agent = await call.app[AGENTS].for_node(found.upload.import_node_id)
    except Exception:  # its files go when the janitor finds them (coordinator/jobs/orphans.py)
        agent = None
    await _give_up(call, agent, found.upload.id, "terminated by the client (DELETE)")
    return _no_content()


async def _give_up(call: Call, agent: AgentClient | None, upload_id: int, reason: str) -> None:
    """Abandon the upload as a broken-off one (uploads.abandon), what it left on the agent removed."""
    if agent is not None:
        with contextlib.suppress(AgentError, AgentUnreachable):
            await agent.delete_upload(upload_id)
    await uploads.abandon(call.app[DB], upload_id, reason)


def _agent_refusal(exc: AgentError | AgentUnreachable, node: str) -> ApiError:
    if isinstance(exc, AgentError) and exc.status in (400, 409, 413, 415, 422, 423, 507):
        message = f"no space on {node}: {exc.message}" if exc.status == 507 else exc.message
        return ApiError(exc.status, exc.error, message)
    return ApiError(503, ErrorSlug.AGENT_FAILED, f"agent of {node} failed: {exc}")
