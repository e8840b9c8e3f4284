"""Bearer-token authentication and role checks for /api/v1."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from coordinator import tokens
from coordinator.api.errors import ApiError
from coordinator.appkeys import AGENT_TOKEN, DB


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token> header")
    token = value.strip()
    # printable ASCII, as every token is: a byte beyond reaches us as a surrogate, and hashing failed
    if scheme.lower() != "bearer" or not token or not (token.isascii() and token.isprintable()):
        raise ApiError(401, "unauthorized", "Authorization header must be 'Bearer <token>'")
    return token


async def authenticate(request: web.Request, needed: str) -> Principal:
    secret = _bearer(request)
    async with request.app[DB]() as session:
        row = await tokens.lookup(session, secret)
    if row is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API token")
    if tokens.RANK[row.role] < tokens.RANK[needed]:  # type: ignore[index]
        raise ApiError(
            403,
            "forbidden",
            f"token {row.name!r} has role {row.role}; this request needs role {needed} or higher",
        )
    return Principal(row.id, row.name, row.role)


def authenticate_agent(request: web.Request) -> None:
    """Agents prove themselves with the shared agent credential."""
    secret = _bearer(request)
    if not hmac.compare_digest(secret.encode(), request.app[AGENT_TOKEN].encode()):
        raise ApiError(401, "unauthorized", "invalid agent credential")
