"""API tokens: created by `pvesphere-coordinator token create`, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.fast_reads import Query, Reads
from coordinator.db.models import ApiToken
from coordinator.db.types import utcnow
from coordinator.errors import CoordinatorError

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
PREFIX = "pvst_"
_TOUCH_EVERY = timedelta(minutes=1)


class TokenError(CoordinatorError, ValueError):
    pass


@dataclass(frozen=True)
class IssuedToken:
    id: int
    name: str
    role: Role
    secret: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


async def create(session: AsyncSession, name: str, role: str) -> IssuedToken:
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    name = name.strip()
    if not name or len(name) > 64:
        raise TokenError("token name must be 1..64 characters")
    secret = new_secret()
    row = ApiToken(name=name, role=role, token_hash=hash_secret(secret))
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise TokenError(f"a token named {name!r} already exists") from None
    return IssuedToken(row.id, row.name, cast(Role, row.role), secret)


# The token of a secret, as the API asks for it on every request (coordinator/db/fast_reads.py).
BY_HASH = Query(
    select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.last_used_at).where(
        ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None)
    )
)


@dataclass(frozen=True)
class LiveToken:
    id: int
    name: str
    role: Role
    last_used_at: datetime | None


async def lookup(reads: Reads, token_hash: str) -> LiveToken | None:
    """The live (not revoked) token with this hash, or None (api/token_cache.py keeps it a second)."""
    rows = (await reads.fetch((BY_HASH, {"token_hash": token_hash})))[0]
    if not rows:
        return None
    return LiveToken(*rows[0])


def touch_due(token: LiveToken, now: datetime) -> bool:
    """Whether to record the token's use: at most once a minute, not a write per request."""
    return token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY


async def touch(session: AsyncSession, token_id: int, now: datetime) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    await session.commit()


async def list_all(session: AsyncSession) -> list[ApiToken]:
    return list((await session.scalars(select(ApiToken).order_by(ApiToken.id))).all())


async def revoke(session: AsyncSession, name_or_id: str) -> ApiToken:
    stmt = select(ApiToken).where(ApiToken.name == name_or_id)
    if name_or_id.isdigit():
        stmt = select(ApiToken).where((ApiToken.id == int(name_or_id)) | (ApiToken.name == name_or_id))
    row = await session.scalar(stmt)
    if row is None:
        raise TokenError(f"no token named or numbered {name_or_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.commit()
    return row


# The live token of an id, for a ticket that names its token (coordinator/events/tickets.py).
BY_ID = Query(
    select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.last_used_at).where(
        ApiToken.id == bindparam("token_id"), ApiToken.revoked_at.is_(None)
    )
)


async def lookup_id(reads: Reads, token_id: int) -> LiveToken | None:
    """The token numbered ``token_id`` if it is live (not revoked), or None."""
    rows = (await reads.fetch((BY_ID, {"token_id": token_id})))[0]
    return LiveToken(*rows[0]) if rows else None
