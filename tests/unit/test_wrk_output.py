"""The API benchmark reads wrk's figures from its text output (benchmarks/wrk.py)."""

from __future__ import annotations

import math

import pytest

from benchmarks import wrk

OUTPUT = """Running 1s test @ http://127.0.0.1:18777/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.45ms    1.92ms  14.31ms   88.01%
    Req/Sec     1.85k   614.55     2.77k    70.00%
  Latency Distribution
     50%  688.00us
     75%    1.39ms
     90%    3.95ms
     99%    1.21s
  1853 requests in 1.01s, 0.92MB read
Requests/sec:   1840.52
Transfer/sec:      0.91MB
"""


def test_rate_count_and_percentiles_in_milliseconds() -> None:
    result = wrk.parse(OUTPUT)
    assert (result.req_per_s, result.requests) == (1840.52, 1853)
    assert result.p50_ms == pytest.approx(0.688)
    assert result.p99_ms == pytest.approx(1210.0)


@pytest.mark.parametrize(
    "failure",
    ["  Non-2xx or 3xx responses: 1853\n", "  Socket errors: connect 0, read 2, write 0, timeout 0\n"],
)
def test_failed_requests_are_an_error_not_a_figure(failure: str) -> None:
    with pytest.raises(RuntimeError, match="wrk saw failures"):
        wrk.parse(OUTPUT.replace("Requests/sec", failure + "Requests/sec"))


@pytest.mark.parametrize(
    "unfinished",
    [
        ("  Socket errors: connect 0, read 0, write 0, timeout 8\n", "1853 requests in"),
        ("", "0 requests in"),
    ],
)
def test_requests_that_did_not_finish_make_the_latency_infinite(unfinished: tuple[str, str]) -> None:
    errors, count = unfinished
    result = wrk.parse(
        OUTPUT.replace("Requests/sec", errors + "Requests/sec").replace("1853 requests in", count)
    )
    assert result.p50_ms == result.p99_ms == math.inf


def test_output_without_latency_distribution_is_refused() -> None:
    with pytest.raises(RuntimeError, match="cannot read"):
        wrk.parse(OUTPUT.replace("     99%    1.21s\n", ""))
