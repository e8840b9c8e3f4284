"""wrk (Debian package ``wrk``): installing it, running it against a URL, reading its figures."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace

from benchmarks.base import Skip
from benchmarks.measure import cpu_seconds

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_LATENCY = re.compile(r"^\s*(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_COUNT = re.compile(r"^\s*([0-9]+) requests in", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")
_ERRORS = re.compile(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+)")
_TIMEOUTS = re.compile(r"Socket errors: connect 0, read 0, write 0, timeout ([0-9]+)")


@dataclass(frozen=True)
class WrkResult:
    req_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu_ms: float = 0.0
    """CPU the server process spent per request (user + system), when its pid was given."""


def ensure_wrk() -> str:
    """wrk's path; as root installs the Debian package (as scripts/bootstrap.sh does qemu-utils)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise Skip("wrk is not installed: as root, apt-get install wrk")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise Skip(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    found = shutil.which("wrk")
    if not found:
        raise Skip("apt-get install wrk gave no wrk on PATH")
    return found


def parse(output: str) -> WrkResult:
    """Figures from ``wrk --latency`` output. A non-2xx answer or a connection error is an
    error (a route that fails fast would otherwise look fast); requests that did not finish
    (wrk's timeout, or none finished at all) make the latencies infinite: wrk leaves them
    out of its percentiles, which would otherwise look good."""
    bad = _NON_2XX.search(output)
    errors = _ERRORS.search(output)
    timeouts = _TIMEOUTS.search(output)
    if bad or (errors and not timeouts):
        raise RuntimeError(f"wrk saw failures ({(bad or errors).group(0)}):\n{output}")  # type: ignore[union-attr]
    rate, count = _RATE.search(output), _COUNT.search(output)
    latency = {pct: float(value) * _UNITS[unit] for pct, value, unit in _LATENCY.findall(output)}
    if rate is None or count is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    requests = int(count.group(1))
    if requests == 0 or (timeouts and int(timeouts.group(1)) > 0):
        return WrkResult(float(rate.group(1)), math.inf, math.inf, requests)
    return WrkResult(float(rate.group(1)), latency["50"], latency["99"], requests)


def run(
    wrk: str, url: str, token: str | None, connections: int, seconds: float, server_pid: int
) -> WrkResult:
    """``connections`` kept-alive connections from 2 threads for ``seconds``, after 1 s of warm-up;
    with the CPU ``server_pid`` spent per request (steadier than req/s on a shared machine)."""
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    common = [wrk, "-t2", f"-c{connections}", "--latency", "--timeout", "10s", *headers, url]
    subprocess.run([*common[:1], "-d1s", *common[1:]], capture_output=True, timeout=60, check=True)
    cpu_before = cpu_seconds(server_pid)
    done = subprocess.run(
        [*common[:1], f"-d{seconds:g}s", *common[1:]], capture_output=True, text=True, timeout=seconds + 60
    )
    cpu = cpu_seconds(server_pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"wrk {url} failed ({done.returncode}): {done.stderr}")
    result = parse(done.stdout)
    return replace(result, server_cpu_ms=cpu * 1000 / max(result.requests, 1))
