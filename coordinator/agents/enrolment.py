"""Agent identities: join tokens, enrolment, revocation, and whose credential is current.

An administrator runs ``pvesphere-coordinator agent enroll NODE``: a single-use join
token bound to NODE (only its sha256 is stored), valid for an hour by default. The
node's agent trades it once (POST /agent-api/v1/enroll) for its credential: the
conditional update that spends the token also bumps the node's generation, so a token
works once even when two agents race with it, and every earlier credential of the node
stops working. ``agent revoke NODE`` cuts a node off at once; only a new join token
brings it back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.agents.credentials import NODE_NAME, NodeClaim
from coordinator.db.models import Agent, AgentIdentity
from coordinator.db.types import utcnow
from coordinator.errors import CoordinatorError, Forbidden, Unauthorized
from coordinator.tokens import hash_secret
from shared.error_slugs import ErrorSlug

JOIN_PREFIX = "pvsj_"
DEFAULT_JOIN_TTL = timedelta(hours=1)


class EnrolmentError(CoordinatorError, ValueError):
    """An administrator's request that cannot be done (the message says why)."""


@dataclass(frozen=True)
class JoinToken:
    node_name: str
    secret: str
    expires_at: datetime


async def _identity(session: AsyncSession, node_name: str) -> AgentIdentity | None:
    return await session.scalar(select(AgentIdentity).where(AgentIdentity.node_name == node_name))


async def issue_join_token(session: AsyncSession, node_name: str, ttl: timedelta) -> JoinToken:
    """A new join token for ``node_name`` (it replaces one not used yet)."""
    if not NODE_NAME.fullmatch(node_name):
        raise EnrolmentError(f"{node_name!r} is not a PVE node name (letters, digits and '-')")
    if ttl <= timedelta(0):
        raise EnrolmentError("a join token must live longer than 0 seconds")
    row = await _identity(session, node_name)
    if row is None:
        row = AgentIdentity(node_name=node_name, generation=0)
        session.add(row)
    secret = JOIN_PREFIX + secrets.token_urlsafe(32)
    row.join_token_hash = hash_secret(secret)
    row.join_expires_at = utcnow() + ttl
    try:
        await session.commit()
    except IntegrityError:  # another administrator enrolled the same new node at this moment
        await session.rollback()
        raise EnrolmentError(f"node {node_name} was just enrolled by someone else; run it again") from None
    return JoinToken(node_name, secret, row.join_expires_at)


async def enroll(session: AsyncSession, node_name: str, join_token: str) -> int:
    """Spend ``join_token`` for ``node_name``; returns the node's new generation."""
    row = await session.scalar(
        select(AgentIdentity).where(AgentIdentity.join_token_hash == hash_secret(join_token))
    )
    if row is None:
        raise Unauthorized(
            ErrorSlug.INVALID_JOIN_TOKEN, "join token is not valid (already used, replaced or never issued)"
        )
    if row.node_name != node_name:
        raise Forbidden(
            ErrorSlug.WRONG_NODE,
            f"this join token is for node {row.node_name}, not for node {node_name}",
        )
    now = utcnow()
    if row.join_expires_at is None or row.join_expires_at <= now:
        raise Unauthorized(ErrorSlug.JOIN_TOKEN_EXPIRED, f"the join token for node {node_name} has expired")
    spent = await session.execute(
        update(AgentIdentity)
        .where(
            AgentIdentity.id == row.id,
            AgentIdentity.join_token_hash == row.join_token_hash,
            AgentIdentity.join_expires_at > now,
        )
        .values(
            generation=AgentIdentity.generation + 1,
            enrolled_at=now,
            revoked_at=None,
            join_token_hash=None,
            join_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Unauthorized(ErrorSlug.INVALID_JOIN_TOKEN, "join token is not valid (already used)")
    await session.commit()
    fresh = await session.get(AgentIdentity, row.id, populate_existing=True)
    assert fresh is not None
    return fresh.generation


async def check_current(session: AsyncSession, claim: NodeClaim) -> None:
    """Raises Unauthorized unless ``claim`` is its node's current, unrevoked enrolment."""
    row = await _identity(session, claim.node_name)
    if row is None or row.generation == 0:
        raise Unauthorized(ErrorSlug.UNAUTHORIZED, f"node {claim.node_name} is not enrolled")
    if row.revoked_at is not None:
        raise Unauthorized(ErrorSlug.UNAUTHORIZED, f"the credential of node {claim.node_name} is revoked")
    if row.generation != claim.generation:
        raise Unauthorized(
            ErrorSlug.UNAUTHORIZED,
            f"node {claim.node_name} was enrolled again: this credential is superseded",
        )


async def revoke(session: AsyncSession, node_name: str) -> AgentIdentity:
    """Refuse the node's credential from now on; its agent is not live from this moment."""
    row = await _identity(session, node_name)
    if row is None:
        raise EnrolmentError(f"node {node_name} was never enrolled")
    now = utcnow()
    row.revoked_at = row.revoked_at or now
    row.join_token_hash = row.join_expires_at = None
    await session.execute(
        update(Agent).where(Agent.node_name == node_name, Agent.stopped_at.is_(None)).values(stopped_at=now)
    )
    await session.commit()
    return row


async def list_all(session: AsyncSession) -> list[AgentIdentity]:
    return list((await session.scalars(select(AgentIdentity).order_by(AgentIdentity.node_name))).all())


def state(row: AgentIdentity, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.generation > 0:
        return "enrolled"
    if row.join_expires_at is not None and row.join_expires_at > now:
        return "waiting"  # for its agent to use the join token
    return "expired"  # the join token ran out unused
