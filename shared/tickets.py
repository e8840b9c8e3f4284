"""Transfer tickets: the coordinator's signed permission for one stream to one node.

A target agent accepts an image stream only with a ticket that the coordinator signed
(Ed25519; agents learn the public key when they register) for exactly that sync task,
attempt (``epoch``), target node and image. Tickets expire after a few minutes and each
one opens a single stream session (the agent remembers used ticket ids), so a copied
ticket cannot be replayed.

Format: ``base64url(json claims) "." base64url(signature)``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TICKET_LIFETIME = 300.0


class TicketInvalid(Exception):
    """Why a ticket is refused (safe to tell the caller)."""


@dataclass(frozen=True)
class Ticket:
    jti: str  # single-use id
    task_id: int
    epoch: int  # the task's attempt: tickets of an older attempt are stale
    node: str  # the target node the stream goes to
    size: int
    sha256: str
    fmt: str
    issued_at: float
    expires_at: float


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
        if self.key_file.exists():
            loaded = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{self.key_file} does not hold an Ed25519 private key")
            self._key = loaded
            return loaded
        key = Ed25519PrivateKey.generate()
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        self._key = key
        return key

    def _write_pub(self, key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        tmp = self._pub_file.with_suffix(".tmp")
        tmp.write_text(_b64(raw) + "\n")
        os.replace(tmp, self._pub_file)

    def issue(
        self,
        *,
        task_id: int,
        epoch: int,
        node: str,
        size: int,
        sha256: str,
        fmt: str,
        now: float | None = None,
    ) -> str:
        now = time.time() if now is None else now
        ticket = Ticket(
            jti=secrets.token_hex(12),
            task_id=task_id,
            epoch=epoch,
            node=node,
            size=size,
            sha256=sha256,
            fmt=fmt,
            issued_at=now,
            expires_at=now + TICKET_LIFETIME,
        )
        body = json.dumps(asdict(ticket), separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._private().sign(body))}"


class TicketVerifier:
    """Checks tickets against the coordinator's public key (the crypto library loads on first use)."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self._key: Ed25519PublicKey | None = None

    def verify(self, token: str, now: float | None = None) -> Ticket:
        """The ticket's claims if the coordinator signed them and they have not expired."""
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
        try:
            ticket = Ticket(**json.loads(body))
        except (ValueError, TypeError):
            raise TicketInvalid("ticket claims are malformed") from None
        now = time.time() if now is None else now
        if now > ticket.expires_at:
            raise TicketInvalid("ticket has expired")
        return ticket
