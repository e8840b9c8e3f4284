"""HTTP side of transfers.

From the coordinator:
    POST   /v1/transfers                      send a staged image along a chain of hops
    GET    /v1/receives/{task_id}?uid=        how far a receive is (progress, errors)
    DELETE /v1/receives/{task_id}?uid=        drop a receive and its file (cancel, delete)
    (uid: the task's, which receives are keyed by, since a task id can come back; without
    it, the last receive of that task id / every one)
From peers (no credential: a ticket the coordinator signed for this node, task and attempt,
then the session it opened):
    POST   /v1/receives/{task_id}/session     open a session; answers the offset to send from
                                              (and, on the insecure data plane, plain_url)
    PUT    /v1/receives/{task_id}/data        the frames (shared/frames.py, read by frame_reader.py),
                                              here or at plain_url (plain_data.py)
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from agent.appkeys import EVICTOR, PLAIN_DATA, RECEIVES, SENDER, STAGING, TRANSFER_POLICY
from agent.client import SESSION_HEADER
from agent.server_errors import json_error
from agent.staging import BadStagedName
from agent.transfer.errors import TransferRefused
from agent.transfer.frame_reader import StreamBody
from agent.transfer.receive import SPACE_RESERVE
from agent.transfer.send import Hop, StagedImage
from shared.tickets import TASK_UID
from shared.validation import Input, parse

log = logging.getLogger(__name__)
# The route names of what peers call (server.py asks them for no credential).
PEER_ROUTES = frozenset({"peer-session", "peer-data"})


class HopIn(Input):
    task_id: Annotated[int, Meta(ge=1)]
    task_uid: Annotated[str, Meta(pattern=TASK_UID)]
    epoch: Annotated[int, Meta(ge=1)]
    node: Annotated[str, Meta(min_length=1)]
    url: Annotated[str, Meta(min_length=1)]
    ticket: Annotated[str, Meta(min_length=1)]


class TransferIn(Input):
    transfer_id: Annotated[str, Meta(pattern="^[A-Za-z0-9._-]{1,64}\\Z")]
    staged_name: str
    size: Annotated[int, Meta(ge=1)]
    hops: Annotated[list[HopIn], Meta(min_length=1)]


class SessionIn(Input):
    ticket: str
    next_hops: list[HopIn] = []


def _task_id(request: web.Request) -> int:
    return int(request.match_info["task_id"])


def _task_uid(request: web.Request) -> str | None:
    """The ``uid`` query parameter: which task of that id (the coordinator always names it)."""
    uid = request.query.get("uid")
    if uid is not None and not re.fullmatch(TASK_UID, uid):
        raise TransferRefused(400, "invalid_request", "uid is not a task uid (32 hex digits)")
    return uid


def _refused(exc: TransferRefused) -> web.Response:
    return json_error(exc.status, exc.error, exc.message)


async def start_transfer(request: web.Request) -> web.Response:
    try:
        body = parse(TransferIn, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, "invalid_request", str(exc)[:500])
    sender = request.app[SENDER]
    policy = request.app[TRANSFER_POLICY]
    if body.transfer_id in sender.transfers:
        return web.json_response({"transfer_id": body.transfer_id, "started": False})
    if sender.outbound >= policy.max_outbound:
        return json_error(429, "busy", f"already sending {sender.outbound} image(s)")
    try:
        path = request.app[STAGING].path(body.staged_name)
    except BadStagedName as exc:
        return json_error(400, "invalid_request", str(exc))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return json_error(404, "missing_image", f"staged image {body.staged_name} is not on this node")
    if size != body.size:
        return json_error(409, "size_mismatch", f"{body.staged_name} has {size} bytes, expected {body.size}")
    hops = [Hop(h.task_id, h.task_uid, h.epoch, h.node, h.url.rstrip("/"), h.ticket) for h in body.hops]
    request.app[STAGING].touch(body.staged_name)  # used now: evicted after copies not used since
    sender.start(body.transfer_id, StagedImage(path, size), hops)
    log.info(
        "transfer %s: sending %s to %s",
        body.transfer_id,
        body.staged_name,
        " -> ".join(f"{h.node} (task {h.task_id})" for h in hops),
    )
    return web.json_response({"transfer_id": body.transfer_id, "started": True})


async def open_session(request: web.Request) -> web.Response:
    try:
        body = parse(SessionIn, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, "invalid_request", str(exc)[:500])
    receives = request.app[RECEIVES]
    next_hops: list[dict[str, Any]] = [msgspec.structs.asdict(h) for h in body.next_hops]
    try:
        wanted = receives.room_wanted(_task_id(request), body.ticket)
        if wanted:
            purpose = f"room for {wanted} bytes of sync task {_task_id(request)}"
            await request.app[EVICTOR].make_room(wanted, SPACE_RESERVE, purpose)
        session, receive = receives.open_session(_task_id(request), body.ticket, next_hops)
    except TransferRefused as exc:
        log.warning("task %s: session refused: %s", _task_id(request), exc.message)
        return _refused(exc)
    answer: dict[str, Any] = {"session": session.id, "offset": receive.rec.verified, "size": receive.size}
    plain = request.app[PLAIN_DATA]
    if request.app[TRANSFER_POLICY].insecure:
        answer["plain_url"] = await plain.url()
    else:
        await plain.close()
    return web.json_response(answer)


async def receive_data(request: web.Request) -> web.Response:
    session = request.headers.get(SESSION_HEADER, "")
    body = StreamBody(request)
    try:
        response = web.json_response(
            await request.app[RECEIVES].stream(_task_id(request), session, body.frames())
        )
    except TransferRefused as exc:
        response = _refused(exc)
    except ConnectionError as exc:
        # The sender went away mid-stream (killed, its transfer canceled, the link broke): an
        # expected end, said in one line; the verified bytes stay and a resume starts there.
        log.warning("task %s: the stream from %s broke off: %s", _task_id(request), request.remote, exc)
        body.abandon()
        return json_error(400, "stream_broken", str(exc))  # (nobody is left to read it)
    except BaseException:
        body.abandon()
        raise
    await body.finish(response)
    return response


async def receive_state(request: web.Request) -> web.Response:
    try:
        receive = request.app[RECEIVES].get(_task_id(request), _task_uid(request))
    except TransferRefused as exc:
        return _refused(exc)
    if receive is None:
        return json_error(404, "receive_not_found", f"no receive for task {_task_id(request)} on this node")
    return web.json_response(receive.view())


async def remove_receive(request: web.Request) -> web.Response:
    try:
        removed = request.app[RECEIVES].remove(_task_id(request), _task_uid(request))
    except TransferRefused as exc:
        return _refused(exc)
    return web.json_response({"task_id": _task_id(request), "removed": removed})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/transfers", start_transfer)
    app.router.add_get("/v1/receives/{task_id:[0-9]+}", receive_state)
    app.router.add_delete("/v1/receives/{task_id:[0-9]+}", remove_receive)
    app.router.add_post("/v1/receives/{task_id:[0-9]+}/session", open_session, name="peer-session")
    app.router.add_put("/v1/receives/{task_id:[0-9]+}/data", receive_data, name="peer-data")
