"""What the coordinator tells every agent about transfers (on register and heartbeat).

The coordinator is the one place these are configured: the public key that checks its
tickets, and the per-node limits on concurrent inbound and outbound streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.tickets import load_public_key


@dataclass
class PeerPolicy:
    ticket_key: Ed25519PublicKey | None = None
    max_inbound: int = 2
    max_outbound: int = 2

    def update(self, settings: dict[str, object]) -> None:
        key = settings.get("ticket_public_key")
        if isinstance(key, str) and key:
            self.ticket_key = load_public_key(key)
        for name in ("max_inbound", "max_outbound"):
            value = settings.get(name)
            if isinstance(value, int) and value > 0:
                setattr(self, name, value)
