"""Watching work (contract 6.4): live events over a WebSocket.

GET  /events                   every kind (filters template_id, task_id, kind)
GET  /templates/sync-tasks/ws  the same stream, sync tasks only
POST /events/ticket            a 30 s ticket for ``?ticket=`` (browsers: no header on a WebSocket)

Auth: the bearer header with a viewer token or more, as every GET, or a ticket
(coordinator/events/tickets.py). Bad filters, auth and a database that does not answer are
refused with the error envelope before the upgrade; after it, the close codes say why a
connection ended (shared/messages/events.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from coordinator import tokens
from coordinator.api.auth import Principal, authenticate
from coordinator.api.errors import ApiError
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, ENGINE, EVENTS, READS, TICKET_VERIFIER, TICKETS
from coordinator.events import reader, session
from coordinator.events import tickets as event_tickets
from coordinator.events.filters import BadFilter, EventFilter, parse_kinds
from shared.error_slugs import ErrorSlug
from shared.messages.events import EVENT_KINDS, Event, EventKind, EventTicket
from shared.tickets import TicketInvalid
from shared.validation import Input

log = logging.getLogger(__name__)
routes = Routes("events")
# How long a connection's first state may take to read.
SNAPSHOT_DEADLINE = 30.0
# A ticket is ~220 characters; the bound keeps a URL within aiohttp's 8 KiB request line
# even percent-encoded (a query that long is refused by aiohttp in plain text, not by us).
TICKET_MAX = 512
# The kernel's send buffer of an events connection (Linux doubles it). Left to autotuning,
# loopback grew it past 1 MiB: a stalled client held that much kernel memory and ~3000
# messages before a send blocked; with this, a few hundred (tests/events).
SEND_BUFFER = 64 << 10


class EventsQuery(Input):
    template_id: Annotated[int, Meta(ge=1, description="only this template's objects")] | None = None
    task_id: Annotated[int, Meta(ge=1, description="only the object with this id")] | None = None
    kind: (
        Annotated[
            str,
            # No pattern: parse_kinds checks it against the route's kinds, naming them.
            Meta(max_length=64, description=f"{', '.join(EVENT_KINDS)}; comma-separated for several"),
        ]
        | None
    ) = None
    ticket: (
        Annotated[
            str, Meta(max_length=TICKET_MAX, description="from POST /events/ticket, instead of the header")
        ]
        | None
    ) = None


async def header_or_ticket(request: web.Request, needed: str) -> Principal:
    """The bearer header if there is one, else ``?ticket=``."""
    ticket = request.query.get("ticket")
    if ticket is None or "Authorization" in request.headers:
        return await authenticate(request, needed)
    try:
        token_id = event_tickets.check(request.app[TICKET_VERIFIER], ticket, time.time())
    except TicketInvalid as exc:
        raise ApiError(401, ErrorSlug.UNAUTHORIZED, f"invalid ticket: {exc}") from None
    row = await tokens.lookup_id(request.app[READS], token_id)
    if row is None:
        raise ApiError(401, ErrorSlug.UNAUTHORIZED, "invalid ticket: its token is revoked")
    if tokens.RANK[row.role] < tokens.RANK[needed]:  # type: ignore[index]
        raise ApiError(
            403, ErrorSlug.FORBIDDEN, f"token {row.name!r} has role {row.role}; this needs {needed}"
        )
    return Principal(row.id, row.name, row.role)


@routes.get(
    "/events", role="viewer", query=EventsQuery, auth=header_or_ticket, websocket=Event, errors=(426,)
)
async def watch_events(call: Call) -> web.StreamResponse:
    """Live events of uploads, sync tasks, clones and version rollouts (WebSocket).

    Answer 101, then one JSON Event per text message: the current state of every matching
    active object first (snapshot: true), then one per change, at most 4 a second per object
    while bytes move. Close codes: 1001 the coordinator stops, 4008 the client fell behind;
    a client that does not answer pings is dropped.
    """
    return await _watch(call, EVENT_KINDS)


@routes.get(
    "/templates/sync-tasks/ws",
    role="viewer",
    query=EventsQuery,
    auth=header_or_ticket,
    websocket=Event,
    errors=(426,),
)
async def watch_sync_tasks(call: Call) -> web.StreamResponse:
    """Live events of sync tasks (WebSocket): GET /events with kind=sync_task.

    The same stream as GET /events, sync tasks only (kind may only be sync_task).
    """
    return await _watch(call, ("sync_task",))


@routes.post("/events/ticket", role="viewer", response=EventTicket)
async def events_ticket(call: Call) -> EventTicket:
    """A ticket for the events WebSocket (?ticket=), valid 30 s, for this token only."""
    assert call.principal is not None
    text, expires = event_tickets.issue(call.app[TICKETS], call.principal.token_id, time.time())
    return EventTicket(text, datetime.fromtimestamp(int(expires), UTC))


def _small_send_buffer(request: web.Request) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _filter(query: EventsQuery, allowed: tuple[EventKind, ...]) -> EventFilter:
    try:
        kinds = parse_kinds(query.kind, allowed)
    except BadFilter as exc:
        raise ApiError(400, ErrorSlug.INVALID_REQUEST, str(exc), {"fields": {exc.field: str(exc)}}) from None
    return EventFilter(query.template_id, query.task_id, kinds)


async def _watch(call: Call, allowed: tuple[EventKind, ...]) -> web.StreamResponse:
    request, config = call.request, call.app[CONFIG]
    wanted = _filter(call.query, allowed)
    ws = web.WebSocketResponse(heartbeat=config.events_heartbeat, max_msg_size=64 << 10)
    if not ws.can_prepare(request).ok:
        raise ApiError(
            426,
            ErrorSlug.UPGRADE_REQUIRED,
            f"{request.path} is a WebSocket: connect with 'Upgrade: websocket'",
        )
    hub = call.app[EVENTS]
    unanswered = ApiError(
        503, ErrorSlug.DATABASE_UNAVAILABLE, "the coordinator's database does not answer; try again shortly"
    )
    try:
        sub = await hub.subscribe(wanted)
    except TimeoutError:
        raise unanswered from None
    try:
        try:
            async with call.app[ENGINE].connect() as conn:
                first = await asyncio.wait_for(reader.snapshot(conn, wanted), SNAPSHOT_DEADLINE)
        except TimeoutError:
            raise unanswered from None
        first = [msgspec.structs.replace(event, snapshot=True) for event in first]
        await ws.prepare(request)
        _small_send_buffer(request)
        try:
            await session.serve(ws, sub, first, config.events_send_timeout)
        except Exception:
            log.exception("events: a connection failed")
            await ws.close(code=1011, message=b"internal error; see the coordinator log")
    finally:
        await hub.unsubscribe(sub)
    return ws
