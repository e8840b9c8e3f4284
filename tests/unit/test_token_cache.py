"""A live token is trusted for at most REVALIDATE_AFTER seconds, then looked up again."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.api import token_cache
from coordinator.api.token_cache import TokenCache
from coordinator.tokens import LiveToken


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ADMIN = LiveToken(1, "ops", "admin", None)


def test_a_token_is_trusted_only_until_the_bound() -> None:
    clock = Clock()
    cache = TokenCache(clock, ttl=1.0)
    assert cache.get("h") is None  # never seen: the database is asked
    cache.put("h", ADMIN)
    clock.now += 0.99
    assert cache.get("h") == ADMIN
    clock.now += 0.01
    assert cache.get("h") is None  # asked again: a revocation elsewhere is seen now
    assert token_cache.REVALIDATE_AFTER <= 1.0


def test_touched_keeps_the_tokens_last_use() -> None:
    cache = TokenCache(Clock())
    cache.put("h", ADMIN)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    cache.touched("h", when)
    found = cache.get("h")
    assert found is not None and found.last_used_at == when


def test_the_cache_stays_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(token_cache, "MAX_ENTRIES", 3)
    cache = TokenCache(Clock())
    for i in range(5):
        cache.put(f"h{i}", ADMIN)
    assert len(cache._found) <= 3
    assert cache.get("h4") == ADMIN
