"""API tokens recently found live, so that not every request asks the database.

On MariaDB the token lookup was half of a read request's cost: a statement is one round
trip, 60 us of the coordinator's CPU in asyncmy and about twice that in mariadbd on the
same two cores (measured: GET of one sync task 0.26 ms of CPU with the lookup, two
statements). A token found live is trusted for ``REVALIDATE_AFTER`` seconds, then looked
up again. Tokens are revoked by ``pvesphere-coordinator token revoke``, another process,
so a revocation takes effect in every running coordinator within that bound (no route
revokes tokens). A secret not found is never remembered: a token just created works at once,
and guessing costs a lookup every time as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from coordinator.tokens import LiveToken

# The longest a revoked token keeps working in a coordinator it was not revoked in.
REVALIDATE_AFTER = 1.0
# Live tokens are few (one per user or tool); more than this and the cache starts over.
MAX_ENTRIES = 1024


class TokenCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = REVALIDATE_AFTER) -> None:
        self._clock = clock
        self._ttl = ttl
        self._found: dict[str, tuple[float, LiveToken]] = {}

    def get(self, token_hash: str) -> LiveToken | None:
        """The token of ``token_hash`` if it was found live less than the bound ago."""
        entry = self._found.get(token_hash)
        if entry is None:
            return None
        if self._clock() - entry[0] >= self._ttl:
            del self._found[token_hash]
            return None
        return entry[1]

    def put(self, token_hash: str, token: LiveToken) -> None:
        if len(self._found) >= MAX_ENTRIES:
            self._found.clear()
        self._found[token_hash] = (self._clock(), token)

    def touched(self, token_hash: str, when: datetime) -> None:
        """The token's use was recorded at ``when`` (it keeps its time in the cache)."""
        entry = self._found.get(token_hash)
        if entry is not None:
            self._found[token_hash] = (entry[0], replace(entry[1], last_used_at=when))
