"""What the coordinator tells every agent about transfers (on register and heartbeat).

The coordinator is the one place these are configured: the public key that checks its
tickets, the per-node limits on concurrent inbound and outbound streams, and whether
image bytes may cross in the clear (data_plane "insecure"; "tls" otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages.link import TransferSettings
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

    def update(self, settings: TransferSettings) -> None:
        key = settings.ticket_public_key
        if key and (self.tickets is None or self.tickets.public_key != key):
            self.tickets = TicketVerifier(key)
        if settings.max_inbound > 0:
            self.max_inbound = settings.max_inbound
        if settings.max_outbound > 0:
            self.max_outbound = settings.max_outbound
        if settings.data_plane in ("tls", "insecure"):
            self.data_plane = settings.data_plane
