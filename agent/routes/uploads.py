"""PUT /v1/uploads/{upload_id}: an image streamed from the coordinator into staging.

The body is the raw image (chunked). It is hashed as it arrives, written under
a name this agent chooses, then validated; only a valid image is kept.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from agent.appkeys import DOWNLOADER, EVICTOR, EXPORTER, MANIFESTS, STAGING
from agent.routes.responses import answer, json_error
from agent.stage_image import stage_if_valid
from agent.upload_writer import UploadDiskFull, UploadTooLarge, body_pieces, receive_to_file
from agent.validate import ImageRejected
from shared.error_slugs import ErrorSlug
from shared.messages.uploads import StagedRemoved, UploadRemoved

log = logging.getLogger(__name__)
FORMATS = ("qcow2", "raw", "vmdk")
# How messages name the image: the file name the coordinator passes on (already sanitised there).
LABEL = re.compile(r"[A-Za-z0-9._+-]{1,200}")
# Leave this much free on the staging disk besides the image itself.
SPACE_RESERVE = 256 << 20


def int_query(request: web.Request, name: str, default: int | None = None) -> int:
    if default is not None and name not in request.query:
        return default
    raw = request.query.get(name, "")
    if not re.fullmatch(r"[0-9]{1,19}", raw):  # (str.isdigit() takes "²", which int() refuses)
        raise web.HTTPBadRequest(text=f"query parameter {name} must be a non-negative integer")
    return int(raw)


def format_query(request: web.Request) -> str:
    """The image format the coordinator named (query ``format``), one of FORMATS."""
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise web.HTTPBadRequest(text=f"format must be one of {', '.join(FORMATS)}")
    return fmt


def label_of(request: web.Request) -> str:
    name = request.query.get("name", "")
    return name if LABEL.fullmatch(name) else "the image"


@dataclass(frozen=True)
class _UploadAsk:
    """What the coordinator's PUT says of the image: its format and the limits it must keep."""

    fmt: str
    max_bytes: int
    max_virtual: int
    size_hint: int


async def receive_upload(request: web.Request) -> web.Response:
    upload_id = int(request.match_info["upload_id"])
    ask = _read_ask(request)
    if isinstance(ask, web.Response):
        return ask
    refused = await _make_room(request, upload_id, ask)
    if refused is not None:
        return refused
    staging = request.app[STAGING]
    name = staging.new_name("upload", upload_id, ask.fmt)
    part = staging.part_path(name)
    received = await _receive(request, upload_id, part, ask.max_bytes)
    if isinstance(received, web.Response):
        return received
    return await _stage_if_valid(request, upload_id, ask, name, part, received[1])


def _read_ask(request: web.Request) -> _UploadAsk | web.Response:
    """The format and limits from the query, or the 400 that says which is wrong."""
    try:
        fmt = format_query(request)
        max_bytes = int_query(request, "max_bytes")
        max_virtual = int_query(request, "max_virtual_size")
        # A chunked body's size is unknown: the coordinator says the most it can be.
        size_hint = int_query(request, "size_hint", 0)
    except web.HTTPBadRequest as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, exc.text or "bad query")
    return _UploadAsk(fmt, max_bytes, max_virtual, size_hint)


async def _make_room(request: web.Request, upload_id: int, ask: _UploadAsk) -> web.Response | None:
    """Room on the staging disk for the body (evicting what may go), or the 413/507 refusal."""
    length = request.content_length
    expected = length if length is not None else ask.size_hint
    if length is not None and length > ask.max_bytes:
        return json_error(
            413, ErrorSlug.TOO_LARGE, f"file of {length} bytes exceeds the limit of {ask.max_bytes}"
        )
    if expected:
        purpose = f"room for {expected} bytes of upload {upload_id}"
        await request.app[EVICTOR].make_room(min(expected, ask.max_bytes), SPACE_RESERVE, purpose)
    free = request.app[STAGING].free_bytes()
    if length is not None and length + SPACE_RESERVE > free:
        return json_error(
            507, ErrorSlug.NO_SPACE, f"staging disk has {free} bytes free, the file needs {length}"
        )
    return None


async def _receive(
    request: web.Request, upload_id: int, part: Path, max_bytes: int
) -> tuple[int, str] | web.Response:
    """The body written to ``part``: (size, sha256), or the refusal of a body cut off."""
    try:
        return await receive_to_file(body_pieces(request.content), part, max_bytes)
    except UploadTooLarge:
        log.warning("upload %s cut off: larger than %d bytes", upload_id, max_bytes)
        return json_error(413, ErrorSlug.TOO_LARGE, f"file exceeds the limit of {max_bytes} bytes")
    except UploadDiskFull as exc:
        log.warning("upload %s failed: %s", upload_id, exc)
        return json_error(507, ErrorSlug.NO_SPACE, str(exc))
    except (ConnectionError, web.HTTPException, OSError) as exc:
        log.warning("upload %s broke off: %s", upload_id, exc.__class__.__name__)
        return json_error(400, ErrorSlug.INCOMPLETE, f"the upload broke off: {exc.__class__.__name__}")
    except Exception as exc:  # aiohttp payload errors (truncated chunked body) and the like
        log.warning("upload %s broke off: %s: %s", upload_id, exc.__class__.__name__, exc)
        return json_error(400, ErrorSlug.INCOMPLETE, f"the upload broke off: {exc}")


async def _stage_if_valid(
    request: web.Request, upload_id: int, ask: _UploadAsk, name: str, part: Path, sha256: str
) -> web.Response:
    """Validate the received ``part``: a valid image becomes staged image ``name``, a rejected
    one is removed."""
    app = request.app
    try:
        staged = await stage_if_valid(
            app[STAGING],
            app[MANIFESTS],
            upload_id,
            ask.fmt,
            ask.max_virtual,
            label_of(request),
            name,
            part,
            sha256,
        )
    except ImageRejected as exc:
        log.warning("upload %s rejected: %s", upload_id, exc.reason)
        return json_error(exc.status, ErrorSlug.IMAGE_REJECTED, exc.reason)
    return answer(staged)


async def delete_upload(request: web.Request) -> web.Response:
    """DELETE /v1/uploads/{id}: whatever an upload left here, for an upload the coordinator
    gave up on without learning the staged name (it stopped before the answer came). An
    export or download still writing for it is stopped first, or its copy would come after
    the clean-up."""
    upload_id = int(request.match_info["upload_id"])
    await request.app[EXPORTER].cancel(upload_id, "the coordinator gave the upload up")
    await request.app[DOWNLOADER].cancel(upload_id, "the coordinator gave the upload up")
    removed = request.app[STAGING].remove_upload(upload_id)
    if removed:
        log.info("upload %s given up by the coordinator: removed %s", upload_id, ", ".join(removed))
    return answer(UploadRemoved(upload_id, removed))


async def delete_staged(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        removed = request.app[STAGING].remove(name)
    except ValueError as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc))
    if removed:
        log.info("removed staged image %s", name)
    return answer(StagedRemoved(name, removed))
