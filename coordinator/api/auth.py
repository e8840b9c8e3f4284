"""Bearer authentication: API tokens and their roles for /api/v1, node credentials for
/agent-api/v1."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from coordinator import tokens
from coordinator.agents import enrolment
from coordinator.api.errors import ApiError
from coordinator.appkeys import CREDENTIALS, DB, READS, TOKEN_CACHE
from coordinator.db.types import utcnow
from shared.error_slugs import ErrorSlug


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str


@dataclass(frozen=True)
class AgentCaller:
    """The node whose agent made the request (its credential is current)."""

    node_name: str
    generation: int


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise ApiError(401, ErrorSlug.UNAUTHORIZED, "missing Authorization: Bearer <token> header")
    token = value.strip()
    # printable ASCII, as every token is: a byte beyond reaches us as a surrogate, and hashing failed
    if scheme.lower() != "bearer" or not token or not (token.isascii() and token.isprintable()):
        raise ApiError(401, ErrorSlug.UNAUTHORIZED, "Authorization header must be 'Bearer <token>'")
    return token


async def authenticate(request: web.Request, needed: str) -> Principal:
    token_hash = tokens.hash_secret(bearer(request))
    seen = request.app[TOKEN_CACHE]
    row = seen.get(token_hash)
    if row is None:
        row = await tokens.lookup(request.app[READS], token_hash)
        if row is None:
            raise ApiError(401, ErrorSlug.UNAUTHORIZED, "invalid or revoked API token")
        seen.put(token_hash, row)
    now = utcnow()
    if tokens.touch_due(row, now):
        async with request.app[DB]() as session:
            await tokens.touch(session, row.id, now)
        seen.touched(token_hash, now)
    if tokens.RANK[row.role] < tokens.RANK[needed]:  # type: ignore[index]
        raise ApiError(
            403,
            ErrorSlug.FORBIDDEN,
            f"token {row.name!r} has role {row.role}; this request needs role {needed} or higher",
        )
    return Principal(row.id, row.name, row.role)


async def authenticate_agent(request: web.Request) -> AgentCaller:
    """Agents prove themselves with their own node's credential."""
    claim = request.app[CREDENTIALS].check(bearer(request))
    if claim is None:
        raise ApiError(401, ErrorSlug.UNAUTHORIZED, "invalid agent credential")
    async with request.app[DB]() as session:
        await enrolment.check_current(session, claim)
    return AgentCaller(claim.node_name, claim.generation)
