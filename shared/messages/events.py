"""Coordinator -> API client: live events over a WebSocket (GET /api/v1/events, contract 6.4).

One JSON object per WebSocket text message, one message per change of one object. The
first messages of a connection are the current state of every matching active object
(``snapshot`` true), then one per change. While bytes move an object has at most 4
messages a second (the latest state wins); every status an object passes through is sent,
and so is its final state.

``kind``: ``upload`` (its status covers the import: uploading, uploaded, importing,
imported, failed; ``progress`` is the import's), ``sync_task``, ``clone``, and ``version``:
a version's rollout to the nodes seen as one execution, ``id`` its upload's id,
``counts`` its sync tasks by status, ``progress`` their mean, bytes their sums.

Fields after ``at`` are present only where they apply (absent, not null). Decode with
``shared.messages.decode(Event, raw)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from shared.validation import Model

EventKind = Literal["upload", "sync_task", "clone", "version"]
EVENT_KINDS: tuple[EventKind, ...] = ("upload", "sync_task", "clone", "version")

# WebSocket close codes the coordinator sends (besides 1000 and 1011).
CLOSE_GOING_AWAY = 1001  # the coordinator stops: connect again (to any replica)
CLOSE_TOO_SLOW = 4008  # the client fell behind (did not read its messages): connect again


class Event(Model, omit_defaults=True):
    kind: EventKind
    id: int
    template_id: int | None
    status: str
    progress: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_sec: int
    error_message: str | None
    # When the object last changed (its row's updated_at), RFC 3339 UTC.
    at: datetime
    # The template's version the object belongs to (every kind has one).
    version: int | None = None
    # Upload: the import node; sync task: the target node; clone: the node the clone goes to.
    node_id: int | None = None
    # Sync task: of bytes_done, what crossed the network and what the target had already.
    bytes_sent: int | None = None
    bytes_reused: int | None = None
    # Version: its sync tasks by status, e.g. {"completed": 2, "syncing": 1}.
    counts: dict[str, int] | None = None
    # True on the messages of the first state sent on connecting (absent on a change).
    snapshot: bool = False


class EventTicket(Model):
    """``POST /api/v1/events/ticket``: pass ``ticket`` as ``?ticket=`` to the WebSocket routes
    (browsers cannot set a header on a WebSocket) before ``expires_at``."""

    ticket: str
    expires_at: datetime


def encode_event(event: Event) -> str:
    return _ENCODER.encode(event).decode()


_ENCODER = msgspec.json.Encoder()
