"""inventory_reads: an agent's liveness is decided on its heartbeat to the microsecond, as
/readyz decides it, not on the whole seconds the API shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.agents.registry import is_live
from coordinator.api.inventory_reads import _heartbeats


def test_heartbeat_read_as_stored_keeps_its_microseconds() -> None:
    beats = _heartbeats(None, "2025-12-24 10:00:00.750000")
    assert beats.last_heartbeat_at == datetime(2025, 12, 24, 10, 0, 0, 750000, tzinfo=UTC)
    # 10.25 s after the heartbeat: live with a 10.5 s timeout (whole seconds would say 10.75 s: silent)
    now = datetime(2025, 12, 24, 10, 0, 11, tzinfo=UTC)
    assert is_live(beats, now, timedelta(seconds=10.5))
    assert not is_live(_heartbeats(now, "2025-12-24 10:00:00.750000"), now, timedelta(seconds=10.5))
    assert _heartbeats(None, None).last_heartbeat_at is None
    assert _heartbeats(None, "2025-12-24 10:00:00").last_heartbeat_at == datetime(
        2025, 12, 24, 10, tzinfo=UTC
    )
