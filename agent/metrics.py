"""The agent's ``GET /metrics`` (contract 6.4): bytes to and from each peer, chunks
refused and why, seed chunks found corrupt, imports/clones/exports running and finished,
staging's bytes, the build. No credential: what Prometheus scrapes.

Bytes are counted where they move: a frame handed to the connection (agent/transfer/
send.py), a frame taken off it (receive.py); both on the wire (compressed where it paid).
A peer is named by its node name: the sender's as the session's request says, after its
ticket passed (shared/metrics.BoundedLabel caps the values all the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import PREFIX, BoundedLabel, new_registry

Job = Literal["import", "clone", "export"]
# Why a stream's chunk was refused (the stream ends; the sender resumes from what was verified).
RejectReason = Literal["digest_mismatch", "bad_frame", "bad_offset", "image_checksum"]
UNKNOWN_PEER = "unknown"  # a sender too old to name itself


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = new_registry("agent")
        self._peers = BoundedLabel()
        self.sent = Counter(
            PREFIX + "agent_sent_bytes",
            "Image bytes this agent sent to a peer agent (on the wire), by peer node.",
            ["peer"],
            registry=self.registry,
        )
        self.received = Counter(
            PREFIX + "agent_received_bytes",
            "Image bytes this agent received from a peer agent (on the wire), by peer node.",
            ["peer"],
            registry=self.registry,
        )
        self.rejected = Counter(
            PREFIX + "agent_chunks_rejected",
            "Chunks of incoming streams refused, by reason (the sender resumes or the copy fails).",
            ["reason"],
            registry=self.registry,
        )
        self.corrupt_reused = Counter(
            PREFIX + "agent_corrupt_reused_chunks",
            "Chunks taken from an earlier version's disk that failed their manifest digest "
            "(they come over the network instead).",
            registry=self.registry,
        )
        self.finished = Counter(
            PREFIX + "agent_jobs_finished",
            "Imports, clones and exports this agent finished, by job and result (done, failed).",
            ["job", "result"],
            registry=self.registry,
        )

    def sent_to(self, peer: str, n: int) -> None:
        self.sent.labels(self._peers(peer)).inc(n)

    def received_from(self, peer: str | None, n: int) -> None:
        self.received.labels(self._peers(peer or UNKNOWN_PEER)).inc(n)

    def refused(self, reason: RejectReason) -> None:
        self.rejected.labels(reason).inc()

    def job_ended(self, job: Job) -> Callable[[str], None]:
        """What a job's owner calls with its result when one ends."""
        return lambda result: self.finished.labels(job, result).inc()

    def watch(
        self, running: dict[Job, Callable[[], int]], used: Callable[[], int], free: Callable[[], int]
    ) -> None:
        """Figures read at scrape time: jobs running now, staging's bytes."""
        self.registry.register(_NowCollector(running, used, free))


class _NowCollector(Collector):
    def __init__(
        self, running: dict[Job, Callable[[], int]], used: Callable[[], int], free: Callable[[], int]
    ) -> None:
        self.running, self.used, self.free = running, used, free

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            PREFIX + "agent_jobs_running", "Imports, clones and exports running now.", labels=["job"]
        )
        for job, count in self.running.items():
            jobs.add_metric([job], count())
        yield jobs
        yield GaugeMetricFamily(
            PREFIX + "agent_staging_used_bytes",
            "Bytes staging holds (images, partial copies, records).",
            value=self.used(),
        )
        yield GaugeMetricFamily(
            PREFIX + "agent_staging_free_bytes", "Bytes free on staging's filesystem.", value=self.free()
        )
