"""A transfer step refused, with the HTTP status and slug a peer or the coordinator sees."""

from __future__ import annotations

from agent.errors import AgentFault
from shared.errors import ServiceError


class TransferRefused(ServiceError, AgentFault):
    pass
