"""Following a sync at its targets: each target agent's GET /v1/receives/{task_id}, polled.

Every sample is stamped (``time.perf_counter``) when its answer has arrived, and may carry
the CPU seconds of some processes read right then (``/proc/PID/stat``), so a figure can be
cut at "all bytes verified" as well as at "complete". One keep-alive connection per agent
keeps the polling cheap for the agent being measured.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.measure import CpuSplit, cpu_seconds, cpu_split, machine_busy_seconds

POLL_INTERVAL = 0.02


class ReceiveFailed(RuntimeError):
    pass


class AgentConnection:
    """GET requests to one agent with its node's credential, over one kept-alive HTTPS
    connection that checks the agent's certificate against ``ca_file``."""

    def __init__(self, url: str, credential: str, ca_file: Path, timeout: float = 10) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 443
        self.headers = {"Authorization": f"Bearer {credential}"}
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=str(ca_file))
        self._conn: http.client.HTTPSConnection | None = None

    def get(self, path: str) -> tuple[int, Any]:
        for attempt in (1, 2):  # the agent may close an idle kept-alive connection
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.tls
                )
            try:
                self._conn.request("GET", path, headers=self.headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
                continue
            return resp.status, json.loads(raw or b"null")
        raise AssertionError("unreachable")

    def receive(self, task_id: int) -> dict[str, Any] | None:
        """The receive's view, or None while the target has none yet (no session opened)."""
        status, body = self.get(f"/v1/receives/{task_id}")
        if status == 404:
            return None
        if status != 200:
            raise ReceiveFailed(f"GET /v1/receives/{task_id} at {self.host}:{self.port}: {status} {body}")
        return body  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Sample:
    at: float
    """perf_counter when the answer arrived."""
    state: str
    """receiving | idle | complete | failed, or absent (no receive yet)."""
    verified: int
    cpu: dict[str, float]
    """CPU seconds of the watched processes when the answer arrived."""
    machine: float
    """Busy CPU seconds of the whole machine (all cores) then."""
    split: dict[str, CpuSplit]
    """The watched processes' CPU, user/system and main thread/other threads."""


@dataclass
class ReceiveTrace:
    """What one target's agent showed about one sync task, sample by sample."""

    node: str
    task_id: int
    size: int
    samples: list[Sample] = field(default_factory=list)

    def _first(self, what: str, test: Any) -> Sample:
        for sample in self.samples:
            if test(sample):
                return sample
        raise ReceiveFailed(f"{self.node} task {self.task_id}: no sample shows {what}")

    @property
    def first_verified(self) -> Sample:
        """The first sample with verified bytes (the stream has started)."""
        return self._first("verified bytes", lambda s: s.verified > 0)

    @property
    def all_verified(self) -> Sample:
        """The first sample with every byte verified and written (before fdatasync and rename)."""
        return self._first("every byte verified", lambda s: s.verified >= self.size)

    @property
    def complete(self) -> Sample:
        """The first sample in state complete: fdatasync'ed, sha256 matched, renamed."""
        return self._first("state complete", lambda s: s.state == "complete")

    @property
    def stream_seconds(self) -> float:
        return self.all_verified.at - self.first_verified.at

    @property
    def stream_rate(self) -> float:
        """Bytes per second between the first and the all-verified sample."""
        first, last = self.first_verified, self.all_verified
        return (last.verified - first.verified) / (last.at - first.at)

    @property
    def steady_rate(self) -> float | None:
        """Bytes per second fitted (least squares) to the samples between 5 % and 95 % of the image:
        a check on ``stream_rate`` that a constant lag of ``verified`` behind the network cannot bias."""
        points = [
            (s.at, s.verified) for s in self.samples if 0.05 * self.size <= s.verified <= 0.95 * self.size
        ]
        if len(points) < 3:
            return None
        mean_t = sum(t for t, _ in points) / len(points)
        mean_v = sum(v for _, v in points) / len(points)
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else None

    @property
    def done(self) -> bool:
        return bool(self.samples) and self.samples[-1].state == "complete"


def follow(
    agents: dict[str, AgentConnection],
    tasks: dict[str, int],
    size: int,
    pids: dict[str, int] | None = None,
    timeout: float = 600,
    interval: float = POLL_INTERVAL,
) -> dict[str, ReceiveTrace]:
    """Poll each node's receive for its task every ``interval`` s until all are complete."""
    traces = {node: ReceiveTrace(node, task_id, size) for node, task_id in tasks.items()}
    deadline = time.monotonic() + timeout
    tick = time.perf_counter()
    while not all(t.done for t in traces.values()):
        for node, trace in traces.items():
            if trace.done:
                continue
            view = agents[node].receive(trace.task_id)
            at = time.perf_counter()
            cpu = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
            split = {name: cpu_split(pid) for name, pid in (pids or {}).items()}
            machine = machine_busy_seconds()
            if view is None:
                trace.samples.append(Sample(at, "absent", 0, cpu, machine, split))
                continue
            if view["state"] == "failed":
                raise ReceiveFailed(f"{node} task {trace.task_id}: receive failed: {view.get('error')}")
            sample = Sample(at, str(view["state"]), int(view["verified"]), cpu, machine, split)
            trace.samples.append(sample)
        if time.monotonic() > deadline:
            late = {n: t.samples[-1] if t.samples else None for n, t in traces.items() if not t.done}
            raise ReceiveFailed(f"receives not complete after {timeout:.0f}s: {late}")
        tick += interval
        time.sleep(max(0.0, tick - time.perf_counter()))
    return traces
