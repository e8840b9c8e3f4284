"""What the coordinator tells every agent about transfers (on register and heartbeat).

The coordinator is the one place these are configured: the public key that checks its
tickets, the per-node limits on concurrent inbound and outbound streams, and whether
image bytes may cross in the clear (data_plane "insecure"; "tls" otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.tickets import TicketVerifier


@dataclass
class PeerPolicy:
    tickets: TicketVerifier | None = None
    max_inbound: int = 2
    max_outbound: int = 2
    data_plane: str = "tls"

    @property
    def insecure(self) -> bool:
        return self.data_plane == "insecure"

    def update(self, settings: dict[str, object]) -> None:
        key = settings.get("ticket_public_key")
        if isinstance(key, str) and key and (self.tickets is None or self.tickets.public_key != key):
            self.tickets = TicketVerifier(key)
        for name in ("max_inbound", "max_outbound"):
            value = settings.get(name)
            if isinstance(value, int) and value > 0:
                setattr(self, name, value)
        plane = settings.get("data_plane")
        if plane in ("tls", "insecure"):
            self.data_plane = str(plane)
