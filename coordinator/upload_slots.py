"""Who may stream an upload now: a limit on all uploads, and one per API token.

A slot is held while an upload's bytes move, not while its import runs. Taking one never
waits: beyond a limit the caller answers 429 naming the limit, so that one client (or a
few) cannot take every slot and shut everybody else out. The slots are rows of the
database (coordinator/shared_limits.py), so the limits hold across coordinator replicas,
and a killed coordinator's slots come free when they expire (job_lease_seconds).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.errors import CoordinatorError
from coordinator.shared_limits import SharedLimit
from shared.error_slugs import ErrorSlug

# The Retry-After of a 429. Slots free as uploads finish: a 4 GiB image streams in ~9 s at
# the 489 MB/s measured on loopback (benchmarks/README.md), ~40 s over 1 GbE. A client that
# sends Expect: 100-continue is refused before its body, so asking again this soon costs little.
RETRY_AFTER = 10.0


class UploadLimitReached(CoordinatorError):
    """A new upload would go over a limit: ``error`` is its slug, the message names its setting."""

    def __init__(self, error: ErrorSlug, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.retry_after = RETRY_AFTER


class UploadSlots:
    def __init__(self, db: async_sessionmaker[AsyncSession], total: int, per_token: int, ttl: float) -> None:
        self.db = db
        self.total = total
        self.per_token = per_token
        self.ttl = ttl
        self._all = SharedLimit(db, "upload", total, ttl)

    def _of_token(self, token_id: int) -> SharedLimit:
        return SharedLimit(self.db, f"upload-token-{token_id}", self.per_token, self.ttl)

    def _token_full(self) -> UploadLimitReached:
        return UploadLimitReached(
            ErrorSlug.TOO_MANY_UPLOADS_FOR_TOKEN,
            f"this token already has as many uploads running as it may "
            f"(max_uploads_per_token = {self.per_token}); retry later",
        )

    def _all_full(self) -> UploadLimitReached:
        return UploadLimitReached(
            ErrorSlug.TOO_MANY_UPLOADS,
            f"every upload slot is in use (max_concurrent_uploads = {self.total}); retry later",
        )

    async def check(self, token_id: int) -> None:
        """Raise UploadLimitReached if one more upload of ``token_id`` would go over a limit
        now (a look, not a reservation: hold() decides)."""
        if await self._of_token(token_id).in_use() >= self.per_token:
            raise self._token_full()
        if await self._all.in_use() >= self.total:
            raise self._all_full()

    @contextlib.asynccontextmanager
    async def hold(self, token_id: int) -> AsyncIterator[None]:
        """A slot of the token's and one of all for the duration of the block, or
        UploadLimitReached at once."""
        of_token = self._of_token(token_id)
        mine = await of_token.take("upload")
        if mine is None:
            raise self._token_full()
        try:
            shared = await self._all.take(f"upload-token-{token_id}")
            if shared is None:
                raise self._all_full()
            try:
                yield
            finally:
                await self._all.give_back(shared)
        finally:
            await of_token.give_back(mine)
