"""The base of every exception of this project's own, and the one error that travels:
an HTTP status, a slug (shared/error_slugs.py) and a message for humans.

Each process has its base below this one (the agent's is agent/errors.py AgentFault), so
``except PvesphereError`` catches what our code raised and nothing a library did.
"""

from __future__ import annotations

from shared.error_slugs import ErrorSlug


class PvesphereError(Exception):
    """Raised by this project's code (not by a library it uses)."""


class ServiceError(PvesphereError):
    """An error as it crosses HTTP: the coordinator's API errors (coordinator/api/errors.py
    ApiError), an agent's refusals (TransferRefused) and an agent's answer as its client
    sees it (AgentError) are all this."""

    def __init__(self, status: int, error: ErrorSlug, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
