"""The agent's exception base: everything the agent's own code raises derives from it."""

from __future__ import annotations

from shared.errors import PvesphereError


class AgentFault(PvesphereError):
    """Raised by the agent's code (agent/), whichever process it runs in (the agent client
    also runs in the coordinator)."""
