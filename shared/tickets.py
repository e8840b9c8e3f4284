"""Transfer tickets: the coordinator's signed permission for one stream to one node.

A target agent accepts an image stream only with a ticket that the coordinator signed
(Ed25519; agents learn the public key when they register) for exactly that sync task,
attempt (``epoch``), target node and image: the image as the guest sees it (``size``, its
``sha256``) and the sha256 of its chunk manifest (``manifest``, shared/manifest.py), so
every chunk digest in the manifest is the coordinator's word. Tickets expire after a few minutes and each
one opens a single stream session (the agent remembers used ticket ids, across its
restarts, until they expire), so a copied ticket cannot be replayed.

A signature alone is not enough: the claims must also make sense (typed and in range, not
issued in the future, not living longer than the coordinator ever makes them live), so a
signing bug or a stolen key cannot hand an agent absurd sizes or tickets that never end.

Format: ``base64url(json claims) "." base64url(signature)``.
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta

from shared.errors import PvesphereError
from shared.private_files import create_private_once, replace_private

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TICKET_LIFETIME = 300.0
# How far ahead of the agent's clock a ticket's issue time may be (clocks drift a little).
CLOCK_SKEW = 60.0
# No image is larger than this (the coordinator's upload caps are far below it).
MAX_IMAGE_BYTES = 1 << 42
TASK_UID = "^[0-9a-f]{32}\\Z"
SHA256_HEX = "^[0-9a-f]{64}\\Z"


class TicketInvalid(PvesphereError):
    """Why a ticket is refused (safe to tell the caller)."""


class Ticket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    jti: Annotated[str, Meta(pattern="^[0-9a-f]{24}\\Z")]  # single-use id
    task_id: Annotated[int, Meta(ge=1)]
    # What the agent keys the receive by: a task id can come back (a deleted task's, or
    # another coordinator's), a uid does not.
    task_uid: Annotated[str, Meta(pattern=TASK_UID)]
    epoch: Annotated[int, Meta(ge=1)]  # the task's attempt: tickets of an older attempt are stale
    node: Annotated[str, Meta(min_length=1, max_length=100)]  # the target node the stream goes to
    size: Annotated[int, Meta(ge=0, le=MAX_IMAGE_BYTES)]
    sha256: Annotated[str, Meta(pattern=SHA256_HEX)]  # of the whole guest view
    # sha256 of the copy's chunk manifest (shared/manifest.py): every chunk digest in it is
    # the coordinator's word, whether the chunk comes over the network or from a seed.
    manifest: Annotated[str, Meta(pattern=SHA256_HEX)]
    fmt: Annotated[str, Meta(pattern="^(qcow2|raw|vmdk)\\Z")]
    issued_at: float
    expires_at: float


def check_times(ticket: Ticket, now: float) -> None:
    """Raises TicketInvalid unless ``ticket`` is within its lifetime at ``now``."""
    if ticket.issued_at > now + CLOCK_SKEW:
        raise TicketInvalid("ticket is issued in the future (check the clocks of coordinator and agent)")
    if not 0 < ticket.expires_at - ticket.issued_at <= TICKET_LIFETIME:
        raise TicketInvalid(f"ticket lifetime is not within (0, {TICKET_LIFETIME:.0f}] seconds")
    if now > ticket.expires_at:
        raise TicketInvalid("ticket has expired")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketSigner:
    """The coordinator's signing key, kept in a 0600 file (made on first start).

    Its public half is kept beside it (``<key>.pub``): agents get it on every heartbeat,
    and reading it does not load the crypto library, which costs ~7 MiB of memory in a
    process that may never sign a ticket (no sync).
    """

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._pub_file = key_file.with_name(key_file.name + ".pub")
        self._key: Ed25519PrivateKey | None = None
        if not (key_file.exists() and self._pub_file.exists()):
            self._write_pub(self._private())
        self.public_key = self._pub_file.read_text().strip()

    def _private(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if self._key is not None:
            return self._key
        if not self.key_file.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            create_private_once(self.key_file, pem)
        loaded = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{self.key_file} does not hold an Ed25519 private key")
        self._key = loaded
        return loaded

    def _write_pub(self, key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        replace_private(self._pub_file, (_b64(raw) + "\n").encode())

    def issue(
        self,
        *,
        task_id: int,
        task_uid: str,
        epoch: int,
        node: str,
        size: int,
        sha256: str,
        manifest: str,
        fmt: str,
        now: float | None = None,
    ) -> str:
        now = time.time() if now is None else now
        return self.sign(
            Ticket(
                jti=secrets.token_hex(12),
                task_id=task_id,
                task_uid=task_uid,
                epoch=epoch,
                node=node,
                size=size,
                sha256=sha256,
                manifest=manifest,
                fmt=fmt,
                issued_at=now,
                expires_at=now + TICKET_LIFETIME,
            )
        )

    def sign(self, ticket: Ticket) -> str:
        return self.sign_bytes(msgspec.json.encode(ticket))

    def sign_bytes(self, body: bytes) -> str:
        """``body`` and its signature, as a ticket's text (other kinds of claims than Ticket's:
        coordinator/events/tickets.py)."""
        return f"{_b64(body)}.{_b64(self._private().sign(body))}"


class TicketVerifier:
    """Checks tickets against the coordinator's public key (the crypto library loads on first use)."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self._key: Ed25519PublicKey | None = None

    def verify(self, token: str, now: float | None = None) -> Ticket:
        """The ticket's claims if the coordinator signed them, they are sane and within their lifetime."""
        body = self.open(token)
        try:
            ticket = msgspec.json.decode(body, type=Ticket)
        except msgspec.ValidationError as exc:
            raise TicketInvalid(f"ticket claims are invalid: {exc}") from None
        except msgspec.DecodeError:
            raise TicketInvalid("ticket claims are malformed") from None
        check_times(ticket, time.time() if now is None else now)
        return ticket

    def open(self, token: str) -> bytes:
        """The signed body of ``token`` if the coordinator signed it (its claims unchecked)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if self._key is None:
            self._key = Ed25519PublicKey.from_public_bytes(_unb64(self.public_key))
        try:
            body_text, sig_text = token.split(".")
            body, signature = _unb64(body_text), _unb64(sig_text)
        except ValueError:
            raise TicketInvalid("malformed ticket") from None
        try:
            self._key.verify(signature, body)
        except InvalidSignature:
            raise TicketInvalid("ticket signature is not the coordinator's") from None
        return body
