"""/v1/resumable/{upload_id}: a resumable upload's partial file (agent/resumable.py).

PUT makes it (room checked for the whole declared length), GET says its offset, PATCH
appends a body at the offset the caller names, which must be the file's size. When the
last byte is in, the whole file is hashed and validated as a PUT /v1/uploads image is, and
staged (or removed, refused). DELETE /v1/uploads/{id} removes it with the upload's other
files. Every number comes from the query and is checked against the file and the length.
"""

from __future__ import annotations

import logging

from aiohttp import web

from agent.appkeys import EVICTOR, MANIFESTS, RESUMABLE, STAGING
from agent.resumable import UploadBusy
from agent.routes.responses import answer, json_error
from agent.routes.uploads import SPACE_RESERVE, format_query, int_query, label_of
from agent.stage_image import stage_if_valid
from agent.upload_writer import UploadDiskFull, UploadTooLarge, body_pieces
from agent.validate import ImageRejected
from shared.error_slugs import ErrorSlug
from shared.messages.uploads import ResumableHeld, ResumablePatched
from shared.tus import check_patch

log = logging.getLogger(__name__)


def _not_found(upload_id: int) -> web.Response:
    return json_error(404, ErrorSlug.UPLOAD_NOT_FOUND, f"no resumable upload {upload_id} on this agent")


async def create_resumable(request: web.Request) -> web.Response:
    """PUT ?length=&max_bytes=: the partial file, with room for ``length`` bytes (idempotent)."""
    upload_id = int(request.match_info["upload_id"])
    try:
        length = int_query(request, "length")
        max_bytes = int_query(request, "max_bytes")
    except web.HTTPBadRequest as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, exc.text or "bad query")
    if length > max_bytes:
        return json_error(413, ErrorSlug.TOO_LARGE, f"{length} bytes exceed the limit of {max_bytes}")
    files = request.app[RESUMABLE]
    need = length - (files.held(upload_id) or 0)
    await request.app[EVICTOR].make_room(need, SPACE_RESERVE, f"room for resumable upload {upload_id}")
    free = request.app[STAGING].free_bytes()
    if need + SPACE_RESERVE > free:
        return json_error(
            507, ErrorSlug.NO_SPACE, f"staging disk has {free} bytes free, the file needs {need}"
        )
    return answer(ResumableHeld(upload_id, files.create(upload_id)))


async def resumable_offset(request: web.Request) -> web.Response:
    upload_id = int(request.match_info["upload_id"])
    files = request.app[RESUMABLE]
    try:
        async with files.turn(upload_id):  # (a PATCH cut off a moment ago ends first)
            held = files.held(upload_id)
    except UploadBusy as exc:
        return json_error(423, ErrorSlug.UPLOAD_RUNNING, str(exc))
    return _not_found(upload_id) if held is None else answer(ResumableHeld(upload_id, held))


async def patch_resumable(request: web.Request) -> web.Response:
    """PATCH ?offset=&length=&format=&max_virtual_size=&name=: the body appended at offset."""
    upload_id = int(request.match_info["upload_id"])
    try:
        fmt = format_query(request)
        offset = int_query(request, "offset")
        length = int_query(request, "length")
        max_virtual = int_query(request, "max_virtual_size")
    except web.HTTPBadRequest as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, exc.text or "bad query")
    files = request.app[RESUMABLE]
    try:
        async with files.turn(upload_id):
            held = files.held(upload_id)
            if held is None:
                return _not_found(upload_id)
            refused = check_patch(offset, held, length, request.content_length)
            if refused is not None:
                status = 409 if offset != held else 413
                return json_error(
                    status, ErrorSlug.BAD_OFFSET if status == 409 else ErrorSlug.TOO_LARGE, refused
                )
            written = await _append(request, upload_id, offset, length)
            if isinstance(written, web.Response):
                return written
            if written < length:
                return answer(ResumablePatched(upload_id, written))
            return await _stage(request, upload_id, fmt, max_virtual, length)
    except UploadBusy as exc:
        return json_error(423, ErrorSlug.UPLOAD_RUNNING, str(exc))


async def _append(request: web.Request, upload_id: int, offset: int, length: int) -> int | web.Response:
    files = request.app[RESUMABLE]
    try:
        return await files.append(upload_id, offset, length, body_pieces(request.content))
    except UploadTooLarge as exc:
        return json_error(413, ErrorSlug.TOO_LARGE, str(exc))
    except UploadDiskFull as exc:
        log.warning("resumable upload %s: %s", upload_id, exc)
        return json_error(507, ErrorSlug.NO_SPACE, str(exc))
    except Exception as exc:  # the body broke off (reset, truncated): what came is kept
        held = files.held(upload_id)
        log.info("resumable upload %s: PATCH broke off at %s (%s)", upload_id, held, exc.__class__.__name__)
        return json_error(400, ErrorSlug.INCOMPLETE, f"the PATCH broke off at offset {held}")


async def _stage(
    request: web.Request, upload_id: int, fmt: str, max_virtual: int, length: int
) -> web.Response:
    """Every byte is in: hashed, validated and staged, or refused (the file removed)."""
    app = request.app
    files = app[RESUMABLE]
    staging = app[STAGING]
    sha256 = await files.sha256(upload_id)
    name = staging.new_name("upload", upload_id, fmt)
    try:
        staged = await stage_if_valid(
            staging,
            app[MANIFESTS],
            upload_id,
            fmt,
            max_virtual,
            label_of(request),
            name,
            files.path(upload_id),
            sha256,
        )
    except ImageRejected as exc:
        log.warning("resumable upload %s rejected: %s", upload_id, exc.reason)
        return json_error(exc.status, ErrorSlug.IMAGE_REJECTED, exc.reason)
    return answer(ResumablePatched(upload_id, length, staged))
