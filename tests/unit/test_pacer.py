"""The upload bandwidth cap: bytes booked on one timeline for every stream together."""

from __future__ import annotations

import pytest

from shared.pacer import Pacer


def test_no_cap_never_waits() -> None:
    pacer = Pacer(0)
    assert [pacer.book(1 << 30, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_n_bytes_take_n_over_rate_seconds_without_a_first_burst() -> None:
    pacer = Pacer(1000)
    # Chunks read back to back at t=10: each waits until the bytes before it and itself had their time.
    assert [pacer.book(250, now=10.0) for _ in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_streams_share_the_rate() -> None:
    pacer = Pacer(1000)
    first = pacer.book(500, now=0.0)  # stream A
    second = pacer.book(500, now=0.0)  # stream B at the same moment waits behind A
    assert (first, second) == (0.5, 1.0)


def test_a_quiet_spell_earns_no_burst_and_a_slow_stream_is_not_held_back() -> None:
    pacer = Pacer(1000)
    assert pacer.book(100, now=0.0) == pytest.approx(0.1)
    # Long after: the next chunk waits its own share only, nothing owed and nothing saved up.
    assert pacer.book(100, now=60.0) == pytest.approx(0.1)
    # A sender slower than the cap (100 bytes every 0.5 s at 1000 B/s) waits only its own share.
    assert pacer.book(100, now=60.6) == pytest.approx(0.1)
