"""Tickets for the events WebSocket: a browser cannot set a header on a WebSocket, so it
first asks ``POST /api/v1/events/ticket`` (with its bearer token) and passes the ticket as
``?ticket=``.

A ticket is the token's id and a purpose, signed with the coordinator's ticket key (the one
that signs transfer tickets, shared/tickets.py; every replica has it), so any replica checks
it without a database write. It lives ``LIFETIME`` seconds. It names the token, not a copy
of its rights: the token is looked up when the ticket is used, so a revoked token's tickets
stop working and a ticket never has more than its token's role. Its claims are a struct of
their own with ``purpose = "events"``: a transfer ticket is no events ticket, nor the other
way round (each side's struct forbids the other's fields).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.tickets import CLOCK_SKEW, TicketInvalid, TicketSigner, TicketVerifier

LIFETIME = 30.0


class EventsTicket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    purpose: Literal["events"]
    token_id: Annotated[int, Meta(ge=1)]
    nonce: Annotated[str, Meta(pattern="^[0-9a-f]{16}\\Z")]
    issued_at: float
    expires_at: float


def issue(signer: TicketSigner, token_id: int, now: float) -> tuple[str, float]:
    """The ticket's text and when it expires (seconds since the epoch)."""
    claims = EventsTicket("events", token_id, secrets.token_hex(8), now, now + LIFETIME)
    return signer.sign_bytes(msgspec.json.encode(claims)), claims.expires_at


def check(verifier: TicketVerifier, text: str, now: float) -> int:
    """The id of the token the ticket was given to, or TicketInvalid saying why not."""
    body = verifier.open(text)
    try:
        claims = msgspec.json.decode(body, type=EventsTicket)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise TicketInvalid("not an events ticket") from None
    if claims.issued_at > now + CLOCK_SKEW or not 0 < claims.expires_at - claims.issued_at <= LIFETIME:
        raise TicketInvalid("ticket times are not ones this coordinator gives")
    if now > claims.expires_at:
        raise TicketInvalid("ticket has expired: ask POST /api/v1/events/ticket for a new one")
    return claims.token_id
