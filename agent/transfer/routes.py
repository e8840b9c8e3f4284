"""HTTP side of transfers.

From the coordinator:
    POST   /v1/transfers                      send a staged image along a chain of hops
    GET    /v1/staged/{name}/manifest         its chunk manifest's digest ("building" until
                                              it is made: manifests.py)
    GET    /v1/receives/{task_id}?uid=        how far a receive is (progress, errors)
    DELETE /v1/receives/{task_id}?uid=        drop a receive and its file (cancel, delete)
    (uid: the task's, which receives are keyed by, since a task id can come back; without
    it, the last receive of that task id / every one)
From peers (no credential: a ticket the coordinator signed for this node, task and attempt,
then the session it opened):
    POST   /v1/receives/{task_id}/session     open a session (the ticket and the chunk manifest);
                                              answers the offset to send from, the chunks
                                              needed (and, on the insecure data plane, plain_url)
    PUT    /v1/receives/{task_id}/data        the frames (shared/frames.py, read by frame_reader.py),
                                              here or at plain_url (plain_data.py)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import msgspec
from aiohttp import web
from msgspec.structs import replace

from agent.appkeys import EVICTOR, MANIFESTS, PLAIN_DATA, RECEIVES, SENDER, STAGING, TRANSFER_POLICY
from agent.client import SESSION_HEADER
from agent.routes.responses import answer, json_error
from agent.staging import BadStagedName
from agent.transfer.errors import TransferRefused
from agent.transfer.frame_reader import StreamBody
from agent.transfer.receive import SPACE_RESERVE, Receive, Receives
from agent.transfer.send import StagedImage
from shared import server_header
from shared.error_slugs import ErrorSlug
from shared.messages.transfers import (
    ManifestView,
    ReceiveRemoved,
    SessionOpened,
    SessionRequest,
    TransferRequest,
    TransferStarted,
)
from shared.tickets import TASK_UID
from shared.validation import parse

log = logging.getLogger(__name__)
# The route names of what peers call (server.py asks them for no credential).
PEER_ROUTES = frozenset({"peer-session", "peer-data"})
STREAM_BODY = web.RequestKey("stream_body", StreamBody)  # a chunked stream's, taken over early
# A session request carries the chunk manifest (~33 bytes a chunk, base64 in JSON): this
# bounds images at ~1.5 TiB (the app's 1 MiB body limit would stop at ~100 GiB).
MAX_SESSION_BODY = 16 << 20


def _task_id(request: web.Request) -> int:
    return int(request.match_info["task_id"])


def _task_uid(request: web.Request) -> str | None:
    """The ``uid`` query parameter: which task of that id (the coordinator always names it)."""
    uid = request.query.get("uid")
    if uid is not None and not re.fullmatch(TASK_UID, uid):
        raise TransferRefused(400, ErrorSlug.INVALID_REQUEST, "uid is not a task uid (32 hex digits)")
    return uid


def _refused(exc: TransferRefused) -> web.Response:
    return json_error(exc.status, exc.error, exc.message)


async def start_transfer(request: web.Request) -> web.Response:
    try:
        body = parse(TransferRequest, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    sender = request.app[SENDER]
    policy = request.app[TRANSFER_POLICY]
    if body.transfer_id in sender.transfers:
        return answer(TransferStarted(body.transfer_id, started=False))
    if sender.outbound >= policy.max_outbound:
        return json_error(429, ErrorSlug.BUSY, f"already sending {sender.outbound} image(s)")
    try:
        path = request.app[STAGING].path(body.staged_name)
    except BadStagedName as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return json_error(
            404, ErrorSlug.MISSING_IMAGE, f"staged image {body.staged_name} is not on this node"
        )
    if size != body.size:
        return json_error(
            409, ErrorSlug.SIZE_MISMATCH, f"{body.staged_name} has {size} bytes, expected {body.size}"
        )
    ready = request.app[MANIFESTS].cached(body.staged_name)
    if ready is None:  # (the coordinator asks for it before it starts a copy: it is made then)
        request.app[MANIFESTS].view(body.staged_name)
        return json_error(429, ErrorSlug.BUSY, f"the chunk manifest of {body.staged_name} is not made yet")
    hops = [replace(h, url=h.url.rstrip("/")) for h in body.hops]
    request.app[STAGING].touch(body.staged_name)  # used now: evicted after copies not used since
    sender.start(body.transfer_id, StagedImage(path, ready.image, ready.raw), hops)
    log.info(
        "transfer %s: sending %s to %s",
        body.transfer_id,
        body.staged_name,
        " -> ".join(f"{h.node} (task {h.task_id})" for h in hops),
    )
    return answer(TransferStarted(body.transfer_id, started=True))


async def staged_manifest(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        path = request.app[STAGING].path(name)
    except BadStagedName as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc))
    if not path.exists():
        return json_error(404, ErrorSlug.MISSING_IMAGE, f"staged image {name} is not on this node")
    view: ManifestView = request.app[MANIFESTS].view(name)
    return answer(view)


async def _session_request(request: web.Request) -> SessionRequest:
    """The body, read within MAX_SESSION_BODY (aiohttp's own limit is too small for a manifest)."""
    if (request.content_length or 0) > MAX_SESSION_BODY:
        raise TransferRefused(
            413, ErrorSlug.INVALID_REQUEST, f"session request over {MAX_SESSION_BODY} bytes"
        )
    raw = await request.content.read(MAX_SESSION_BODY + 1)
    if len(raw) > MAX_SESSION_BODY or not request.content.at_eof():
        raise TransferRefused(
            413, ErrorSlug.INVALID_REQUEST, f"session request over {MAX_SESSION_BODY} bytes"
        )
    try:
        return msgspec.json.decode(raw, type=SessionRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TransferRefused(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500]) from None


async def open_session(request: web.Request) -> web.Response:
    receives = request.app[RECEIVES]
    try:
        began = time.perf_counter()
        body = await _session_request(request)
        wanted = receives.room_wanted(_task_id(request), body.ticket, body.manifest)
        if wanted:
            purpose = f"room for {wanted} bytes of sync task {_task_id(request)}"
            await request.app[EVICTOR].make_room(wanted, SPACE_RESERVE, purpose)
        roomed = time.perf_counter()
        # The session (and a relay to the next hop) opens first, its seeds are resolved
        # after: along a relay chain each hop's seed look-up (PVE calls, ~0.1-0.4 s each
        # under load) ran one after another, as every hop waited for the one before it.
        session, receive, needed = receives.open_session(
            _task_id(request), body.ticket, body.next_hops, body.manifest, None, body.codecs
        )
        session_at = time.perf_counter()
        if body.seeds and needed:
            seeds = await receives.seeds.for_session(body.seeds)
            needed = receives.take_seeds(session, receive, seeds)
        log.info(
            "task %s: session opened in %.2f s (room %.2f s, then %d seed(s) %.2f s)",
            _task_id(request),
            time.perf_counter() - began,
            roomed - began,
            len(body.seeds),
            time.perf_counter() - session_at,
        )
        session.peer = body.sender
    except TransferRefused as exc:
        log.warning("task %s: session refused: %s", _task_id(request), exc.message)
        return _refused(exc)
    opened = SessionOpened(
        session.id, offset=receive.rec.verified, size=receive.size, needed=needed, codec=session.codec
    )
    plain = request.app[PLAIN_DATA]
    if request.app[TRANSFER_POLICY].insecure:
        opened.plain_url = await plain.url()
    else:
        await plain.close()
    return answer(opened)


async def expect_stream(request: web.Request) -> web.Response | None:
    """A chunked stream (compressed: its length is not known before) asks for its body with
    Expect: 100-continue: the frame reader takes the connection over first (frame_reader.py)."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        return json_error(417, ErrorSlug.EXPECTATION_FAILED, "only Expect: 100-continue is known here")
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        body = request[STREAM_BODY] = StreamBody(request)
        try:
            body.take_over_chunked()
        except TransferRefused as exc:
            return _refused(exc)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def receive_data(request: web.Request) -> web.Response:
    session = request.headers.get(SESSION_HEADER, "")
    body = request.get(STREAM_BODY) or StreamBody(request)
    try:
        response = answer(await request.app[RECEIVES].stream(_task_id(request), session, body.frames()))
    except TransferRefused as exc:
        response = _refused(exc)
    except ConnectionError as exc:
        # The sender went away mid-stream (killed, its transfer canceled, the link broke): an
        # expected end, said in one line; the verified bytes stay and a resume starts there.
        log.warning("task %s: the stream from %s broke off: %s", _task_id(request), request.remote, exc)
        body.abandon()
        return json_error(400, ErrorSlug.STREAM_BROKEN, str(exc))  # (nobody is left to read it)
    except BaseException:
        body.abandon()
        raise
    await body.finish(response)
    return response


async def receive_state(request: web.Request) -> web.Response:
    return _view_of(request, lambda receives, task_id, uid: receives.get(task_id, uid))


async def stop_receive(request: web.Request) -> web.Response:
    """Its task was canceled: the stream stops, the verified bytes stay (for a retry)."""
    return _view_of(request, lambda receives, task_id, uid: receives.stop(task_id, uid or ""))


def _view_of(
    request: web.Request, find: Callable[[Receives, int, str | None], Receive | None]
) -> web.Response:
    """The view of the receive ``find`` returns for the request's task, or a 404."""
    try:
        receive = find(request.app[RECEIVES], _task_id(request), _task_uid(request))
    except TransferRefused as exc:
        return _refused(exc)
    if receive is None:
        return json_error(
            404, ErrorSlug.RECEIVE_NOT_FOUND, f"no receive for task {_task_id(request)} on this node"
        )
    return answer(receive.view())


async def remove_receive(request: web.Request) -> web.Response:
    try:
        removed = request.app[RECEIVES].remove(_task_id(request), _task_uid(request))
    except TransferRefused as exc:
        return _refused(exc)
    return answer(ReceiveRemoved(_task_id(request), removed))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/transfers", start_transfer)
    app.router.add_get("/v1/staged/{name}/manifest", staged_manifest)
    app.router.add_get("/v1/receives/{task_id:[0-9]+}", receive_state)
    app.router.add_delete("/v1/receives/{task_id:[0-9]+}", remove_receive)
    app.router.add_post("/v1/receives/{task_id:[0-9]+}/stop", stop_receive)
    app.router.add_post("/v1/receives/{task_id:[0-9]+}/session", open_session, name="peer-session")
    app.router.add_put(
        "/v1/receives/{task_id:[0-9]+}/data", receive_data, name="peer-data", expect_handler=expect_stream
    )


def plain_data_app(receives: Receives) -> web.Application:
    """What the insecure data plane serves (plain_data.py): the data route alone."""
    app = web.Application()
    server_header.name_server(app, server_header.AGENT)
    app[RECEIVES] = receives
    app.router.add_put("/v1/receives/{task_id:[0-9]+}/data", receive_data, expect_handler=expect_stream)
    return app
