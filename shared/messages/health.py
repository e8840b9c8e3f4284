"""Anyone -> agent: GET /health; coordinator -> agent: GET /v1/whoami; and the body of
every error an agent answers with."""

from __future__ import annotations

from shared.error_slugs import ErrorSlug
from shared.validation import Model


class PveHealth(Model):
    ok: bool
    version: str
    error: str | None


class StagingHealth(Model):
    dir: str
    free_bytes: int
    used_bytes: int
    budget_bytes: int


class TransferHealth(Model):
    inbound: int
    outbound: int
    registered: bool  # it has the coordinator's ticket key
    data_plane: str


class AgentHealth(Model):
    node: str
    cluster: str
    version: str
    started_at: str
    uptime_seconds: float
    pve: PveHealth
    staging: StagingHealth
    transfers: TransferHealth


class AgentIdentity(Model):
    node: str
    version: str


class ErrorBody(Model):
    """``error``: a slug (shared/error_slugs.py), as text: a newer peer may know more."""

    error: str = ErrorSlug.AGENT_ERROR
    message: str = ""
