"""Tickets: only the coordinator's key signs them; they expire; claims cannot be altered and
must make sense even when signed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.tickets import (
    CLOCK_SKEW,
    MAX_IMAGE_BYTES,
    TICKET_LIFETIME,
    Ticket,
    TicketInvalid,
    TicketSigner,
    TicketVerifier,
    _b64,
)

CLAIMS = {
    "task_id": 7,
    "task_uid": "7f" * 16,
    "epoch": 2,
    "node": "pve-node2",
    "size": 1024,
    "sha256": "ab" * 32,
    "manifest": "cd" * 32,
    "fmt": "raw",
}


def test_a_signed_ticket_verifies_and_carries_its_claims(tmp_path: Path) -> None:
    signer = TicketSigner(tmp_path / "key")
    ticket = TicketVerifier(signer.public_key).verify(signer.issue(**CLAIMS, now=1000.0), now=1001.0)
    assert (ticket.task_id, ticket.epoch, ticket.node, ticket.size) == (7, 2, "pve-node2", 1024)
    assert ticket.expires_at == 1000.0 + TICKET_LIFETIME


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    first = TicketSigner(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    again = TicketSigner(tmp_path / "key")
    assert again.public_key == first.public_key
    # the reloaded signer signs with the same key
    ticket = again.issue(**CLAIMS, now=1000.0)
    assert TicketVerifier(first.public_key).verify(ticket, now=1000.5).task_id == 7


def test_another_key_an_altered_claim_and_an_old_ticket_are_refused(tmp_path: Path) -> None:
    signer = TicketSigner(tmp_path / "a")
    checker = TicketVerifier(signer.public_key)
    forged = TicketSigner(tmp_path / "b").issue(**CLAIMS, now=1000.0)
    with pytest.raises(TicketInvalid, match="signature"):
        checker.verify(forged, now=1001.0)

    body, sig = signer.issue(**CLAIMS, now=1000.0).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["node"] = "pve-node3"
    altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TicketInvalid, match="signature"):
        checker.verify(f"{altered}.{sig}", now=1001.0)

    with pytest.raises(TicketInvalid, match="expired"):
        checker.verify(signer.issue(**CLAIMS, now=1000.0), now=1000.0 + TICKET_LIFETIME + 1)
    with pytest.raises(TicketInvalid, match="malformed"):
        checker.verify("not-a-ticket")


def _signed(signer: TicketSigner, now: float, **changes: object) -> str:
    fields: dict[str, object] = {
        "jti": "0" * 24,
        **CLAIMS,
        "issued_at": now,
        "expires_at": now + TICKET_LIFETIME,
    }
    fields.update(changes)
    return signer.sign(Ticket(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"size": -1}, "size"),
        ({"size": MAX_IMAGE_BYTES + 1}, "size"),
        ({"task_id": 0}, "task_id"),
        ({"task_uid": "../7"}, "task_uid"),
        ({"epoch": -2}, "epoch"),
        ({"sha256": "not-hex"}, "sha256"),
        ({"fmt": "../../etc"}, "fmt"),
        ({"issued_at": 1000.0 + CLOCK_SKEW + 5, "expires_at": 1100.0 + CLOCK_SKEW}, "in the future"),
        ({"expires_at": 1000.0 + TICKET_LIFETIME + 1}, "lifetime"),
        ({"expires_at": 999.0}, "lifetime"),
    ],
)
def test_signed_claims_that_make_no_sense_are_refused(tmp_path: Path, changes: dict, reason: str) -> None:
    signer = TicketSigner(tmp_path / "key")
    with pytest.raises(TicketInvalid, match=reason):
        TicketVerifier(signer.public_key).verify(_signed(signer, 1000.0, **changes), now=1000.0)


def test_a_little_clock_skew_is_tolerated(tmp_path: Path) -> None:
    signer = TicketSigner(tmp_path / "key")
    ahead = _signed(signer, 1000.0 + CLOCK_SKEW - 1)  # the coordinator's clock is a bit ahead
    assert TicketVerifier(signer.public_key).verify(ahead, now=1000.0).size == 1024
    assert TicketVerifier(signer.public_key).verify(_signed(signer, 1000.0, size=0), now=1000.0).size == 0


def test_unknown_claims_are_refused(tmp_path: Path) -> None:
    signer = TicketSigner(tmp_path / "key")
    body = json.dumps({**CLAIMS, "jti": "0" * 24, "issued_at": 1.0, "expires_at": 2.0, "admin": True})
    token = f"{_b64(body.encode())}.{_b64(signer._private().sign(body.encode()))}"
    with pytest.raises(TicketInvalid, match="admin"):
        TicketVerifier(signer.public_key).verify(token, now=1.5)
