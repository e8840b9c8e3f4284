"""The coordinator's ``GET /metrics`` (contract 6.4): work by kind and status, how long
jobs took, bytes copied per node, agents' liveness, the database pool, HTTP requests.

Two sources. Counts of rows (tasks by status, agents) are read from the database when
scraped, at most once per SCRAPE_CACHE_SECONDS (several Prometheus servers, or one
scraping often, cost one read): sync tasks from ``sync_task_count`` (kept by triggers,
a few rows whatever the history holds); uploads, clones and deletions in a status work
is in by their (status, ...) indexes (as many index entries as such rows), and those in
a status work ended in (the history: a full index scan) at most every
HISTORY_CACHE_SECONDS. Measured with 1M sync tasks, uploads and clones each on SQLite
(``python -m benchmarks.metrics_scrape``, a loaded 2-core machine): every count at once
96 ms (median of 9), the active ones alone (what most scrapes read) 3.8 ms.
Everything else is counted as it happens in this
process: job durations when a job's state change is committed (coordinator/states/
changes.py), bytes when a sync watcher reads a target's report. With several replicas,
each counts what it saw; Prometheus sums them (``sum without (instance)``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from coordinator.agents.registry import is_live
from coordinator.db.models import Agent, Clone, SyncTaskCount, TemplateDeletion, TemplateUpload
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.types import utcnow
from coordinator.states import clone as clone_states
from coordinator.states.changes import OBSERVERS, StateChange
from coordinator.states.clone import CloneStatus
from coordinator.states.deletion import DeletionStatus
from coordinator.states.sync_task import SyncTaskStatus
from coordinator.states.upload import IMPORT_QUEUE, UploadStatus
from shared.metrics import PREFIX, BoundedLabel, new_registry

# Counts read from the database are this fresh at most (a scrape every 15 s reads each time);
# those of finished work (they only grow, and slowly) this fresh.
SCRAPE_CACHE_SECONDS = 5.0
HISTORY_CACHE_SECONDS = 60.0
# From a second to six hours: a small upload, a 50 GiB image's import or copy.
DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600)
# Imports seen starting in this process and not ended yet (for their durations); more are
# not tracked (a replica that took over others' imports does not time them).
MAX_TRACKED_IMPORTS = 10_000

# Each kind's table and statuses, for the tasks gauge (sync tasks: their counts table), and
# the statuses work is in (the rest: history).
_COUNTED: dict[str, tuple[Any, type[StrEnum], tuple[str, ...]]] = {
    "upload": (TemplateUpload, UploadStatus, (*IMPORT_QUEUE, UploadStatus.UPLOADING, UploadStatus.DELETING)),
    "clone": (Clone, CloneStatus, clone_states.ACTIVE),
    "deletion": (TemplateDeletion, DeletionStatus, (DeletionStatus.RUNNING,)),
}
# Which changes end a timed piece of work: (kind, old status or None for any) -> histogram.
_ENDS = {
    ("upload", "uploading"): "upload",
    ("upload", "importing"): "import",
    ("sync_task", None): "sync",
    ("clone", None): "clone",
    ("deletion", "running"): "deletion",
}
_FINAL = {"uploaded", "imported", "completed", "done", "failed", "canceled"}


@dataclass
class AgentFigure:
    cluster: str
    node: str
    live: bool
    heartbeat_age: float | None  # seconds since its last heartbeat (None: never)


@dataclass
class Figures:
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status) -> rows
    agents: list[AgentFigure] = field(default_factory=list)

    def moved(self, kind: str, old: str, new: str) -> None:
        """One of ``kind`` went from ``old`` to ``new`` since these were read (sync tasks'
        counts are always read afresh: not theirs)."""
        if kind in _COUNTED and (kind, old) in self.tasks and (kind, new) in self.tasks:
            self.tasks[kind, old] = max(self.tasks[kind, old] - 1, 0)
            self.tasks[kind, new] += 1


async def read_figures(
    session: AsyncSession, agent_timeout: float, earlier: Figures | None = None
) -> Figures:
    """Tasks by kind and status, and every registered agent's liveness, as the database has
    them; with ``earlier``, finished work's counts are taken from it (not read again)."""
    figures = Figures()
    for kind, (_model, statuses, _active) in _COUNTED.items():
        figures.tasks |= {(kind, str(status)): 0 for status in statuses}
    figures.tasks |= {("sync_task", str(status)): 0 for status in SyncTaskStatus}
    for status, tasks in await session.execute(
        select(SyncTaskCount.status, func.sum(SyncTaskCount.tasks)).group_by(SyncTaskCount.status)
    ):
        figures.tasks["sync_task", status] = int(tasks or 0)
    for kind, (model, _statuses, active) in _COUNTED.items():
        stmt = select(model.status, func.count()).group_by(model.status)
        if earlier is not None:
            stmt = stmt.where(model.status.in_(active))
            figures.tasks |= {k: n for k, n in earlier.tasks.items() if k[0] == kind and k[1] not in active}
        for status, rows in await session.execute(stmt):
            figures.tasks[kind, status] = int(rows)
    now = utcnow()
    timeout = timedelta(seconds=agent_timeout)
    for agent in await session.scalars(select(Agent)):
        age = None if agent.last_heartbeat_at is None else (now - agent.last_heartbeat_at).total_seconds()
        figures.agents.append(
            AgentFigure(agent.cluster_name, agent.node_name, is_live(agent, now, timeout), age)
        )
    return figures


def duration_of(change: StateChange, import_started: float | None, now: float) -> tuple[str, float] | None:
    """Which job ``change`` ends and how long it took (histogram name, seconds), or None.

    ``import_started``: when this process saw the upload's import start (monotonic), if it did.
    """
    if change.new not in _FINAL:
        return None
    job = _ENDS.get((change.kind, change.old)) or _ENDS.get((change.kind, None))
    if job is None:
        return None
    if job == "import":
        return None if import_started is None else (job, now - import_started)
    if change.since is None:
        return None
    return job, max((utcnow() - change.since).total_seconds(), 0.0)


def sender_of(source_node: str, upstream_nodes: str) -> str:
    """The node that streams to a sync task's target: the last of its chain's upstream nodes
    (the source, then relays), or the source."""
    chain = [n for n in upstream_nodes.split(",") if n]
    return chain[-1] if chain else source_node


class CoordinatorMetrics:
    """One app's metrics; the database is attached once open (``attach``)."""

    def __init__(self, agent_timeout: float) -> None:
        self.db: async_sessionmaker[AsyncSession] | None = None
        self.engine: AsyncEngine | None = None
        self.agent_timeout = agent_timeout
        self.registry = new_registry("coordinator")
        self.figures = Figures()
        self.database_up = True  # whether the last read of the counts got an answer
        self._read_at = -SCRAPE_CACHE_SECONDS
        self._history_read_at = -HISTORY_CACHE_SECONDS
        self._import_started: dict[int, float] = {}
        self._nodes = BoundedLabel()
        self._routes = BoundedLabel()
        self.durations = {
            job: Histogram(
                f"{PREFIX}{job}_duration_seconds",
                f"How long {what} took, by how it ended.",
                ["result"],
                buckets=DURATION_BUCKETS,
                registry=self.registry,
            )
            for job, what in (
                ("upload", "uploads (from the request to the image stored and valid)"),
                ("import", "imports of uploaded images into PVE templates"),
                ("sync", "sync tasks (from their first attempt to the target's template)"),
                ("clone", "clones (from the request to the VM)"),
                ("deletion", "cascade deletes of templates"),
            )
        }
        self.sent = Counter(
            PREFIX + "sync_sent_bytes",
            "Image bytes sent by sync copies, by the sending node (on the wire: compressed where it paid).",
            ["node"],
            registry=self.registry,
        )
        self.received = Counter(
            PREFIX + "sync_received_bytes",
            "Image bytes received by sync copies, by the receiving node (on the wire).",
            ["node"],
            registry=self.registry,
        )
        self.requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by route and status class (2xx, 4xx, ...).",
            ["route", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(self))

    def attach(self, engine: AsyncEngine, db: async_sessionmaker[AsyncSession]) -> None:
        """The database opened: its counts and pool are read from now on, and every state
        change committed through ``db``'s sessions is observed."""
        self.engine, self.db = engine, db
        db.configure(info={OBSERVERS: [self.observe_change]})

    async def refresh(self) -> None:
        """Read the database's counts unless they were read less than SCRAPE_CACHE_SECONDS ago."""
        now = time.monotonic()
        if self.db is None or now - self._read_at < SCRAPE_CACHE_SECONDS:
            return
        history = now - self._history_read_at >= HISTORY_CACHE_SECONDS
        try:
            async with self.db() as session:
                self.figures = await read_figures(
                    session, self.agent_timeout, None if history else self.figures
                )
        except Exception as exc:
            if not unreachable(exc):
                raise
            # The scrape still answers (the process's own figures, the last counts) and says so.
            OUTAGE.failed("reading the counts for /metrics", exc)
            self.database_up = False
            return
        self.database_up = True
        self._read_at = time.monotonic()
        if history:
            self._history_read_at = self._read_at

    def observe_change(self, change: StateChange) -> None:
        """A committed state change (coordinator/states/changes.py): the counts read last
        follow it (those of finished work are read again only each HISTORY_CACHE_SECONDS:
        what this process did shows at once, other replicas' work within that time), and a
        job's end is timed."""
        self.figures.moved(change.kind, change.old, change.new)
        if change.kind == "upload" and change.new == "importing":
            if len(self._import_started) < MAX_TRACKED_IMPORTS:
                self._import_started[change.id] = time.monotonic()
            return
        started = self._import_started.pop(change.id, None) if change.kind == "upload" else None
        ended = duration_of(change, started, time.monotonic())
        if ended is not None:
            job, seconds = ended
            self.durations[job].labels(change.new).observe(seconds)

    def copied(self, sender: str, receiver: str, step: int) -> None:
        """``step`` more bytes went from ``sender`` to ``receiver`` (a sync watcher's report)."""
        if step > 0:
            self.sent.labels(self._nodes(sender)).inc(step)
            self.received.labels(self._nodes(receiver)).inc(step)

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(self._routes(route), f"{status // 100}xx").inc()


class _DatabaseCollector(Collector):
    """The figures read at scrape time, and the connection pool as it is now."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # (nothing to check at registration: the names are ours alone)

    def collect(self) -> Iterator[Metric]:
        figures = self.metrics.figures
        yield GaugeMetricFamily(
            PREFIX + "database_up",
            "1 if the database answered the last read of these counts, else 0 (they are older).",
            value=1 if self.metrics.database_up else 0,
        )
        tasks = GaugeMetricFamily(
            PREFIX + "tasks",
            "Work by kind (upload, sync_task, clone, deletion) and status.",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(figures.tasks.items()):
            tasks.add_metric([kind, status], count)
        yield tasks
        up = GaugeMetricFamily(
            PREFIX + "agent_up",
            "1 while the node's agent heartbeats in time, else 0.",
            labels=["cluster", "node"],
        )
        age = GaugeMetricFamily(
            PREFIX + "agent_heartbeat_age_seconds",
            "Seconds since the node's agent last heartbeat.",
            labels=["cluster", "node"],
        )
        for agent in figures.agents:
            up.add_metric([agent.cluster, agent.node], 1 if agent.live else 0)
            if agent.heartbeat_age is not None:
                age.add_metric([agent.cluster, agent.node], round(agent.heartbeat_age, 3))
        yield up
        yield age
        if self.metrics.engine is not None:
            yield from _pool_gauges(self.metrics.engine)


def _pool_gauges(engine: AsyncEngine) -> Iterator[Metric]:
    pool = engine.pool
    size, checked_out = getattr(pool, "size", None), getattr(pool, "checkedout", None)
    if not (callable(size) and callable(checked_out)):
        return  # (a pool without these figures)
    yield GaugeMetricFamily(PREFIX + "db_pool_size", "Connections the database pool keeps.", value=size())
    yield GaugeMetricFamily(
        PREFIX + "db_pool_checked_out", "Database connections in use now.", value=checked_out()
    )


def http_counter(metrics: CoordinatorMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware counting every answer by route (its pattern, never a path with ids) and
    status class. The count costs 1.35 us a request (timeit, this machine), against the
    1.4 ms of CPU of the cheapest API read."""

    @web.middleware
    async def count_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.answered(route, exc.status)
            raise
        metrics.answered(route, response.status)
        return response

    return count_requests
