"""Who may stream an upload now: a limit on all uploads, and one per API token.

A slot is held while an upload's bytes move, not while its import runs. Taking one never
waits: beyond a limit the caller answers 429 naming the limit, so that one client (or a
few) cannot take every slot and shut everybody else out. The counts are this process's:
each coordinator replica has its own.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

# The Retry-After of a 429. Slots free as uploads finish: a 4 GiB image streams in ~9 s at
# the 489 MB/s measured on loopback (benchmarks/README.md), ~40 s over 1 GbE. A client that
# sends Expect: 100-continue is refused before its body, so asking again this soon costs little.
RETRY_AFTER = 10.0


class UploadLimitReached(Exception):
    """A new upload would go over a limit: ``error`` is its slug, the message names its setting."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.retry_after = RETRY_AFTER


class UploadSlots:
    def __init__(self, total: int, per_token: int) -> None:
        self.total = total
        self.per_token = per_token
        self._running = 0
        self._by_token: Counter[int] = Counter()

    def check(self, token_id: int) -> None:
        """Raise UploadLimitReached if one more upload of ``token_id`` would go over a limit."""
        if self._by_token[token_id] >= self.per_token:
            raise UploadLimitReached(
                "too_many_uploads_for_token",
                f"this token already has as many uploads running as it may "
                f"(max_uploads_per_token = {self.per_token}); retry later",
            )
        if self._running >= self.total:
            raise UploadLimitReached(
                "too_many_uploads",
                f"every upload slot is in use (max_concurrent_uploads = {self.total}); retry later",
            )

    @contextlib.contextmanager
    def hold(self, token_id: int) -> Iterator[None]:
        """A slot for the duration of the block, or UploadLimitReached at once."""
        self.check(token_id)
        self._running += 1
        self._by_token[token_id] += 1
        try:
            yield
        finally:
            self._running -= 1
            self._by_token[token_id] -= 1
            if not self._by_token[token_id]:
                del self._by_token[token_id]
