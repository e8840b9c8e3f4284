"""What the coordinator's and every agent's ``GET /metrics`` have in common: a registry of
their own per application (several apps run in one test process: the global default
registry would refuse the second app's metrics), the process's own figures, the build,
the answer in Prometheus' text format, and labels kept few.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from shared.version import VERSION

# No *_created series beside every counter and histogram: a second time series per label
# set that Prometheus' text format does not need (process-wide; these processes are ours).
disable_created_metrics()

PREFIX = "pvesphere_"
# Beyond this many values of one label, new ones are counted as OTHER (a label value is a
# time series kept for ever: a node's name, never a task's id or a file's name).
MAX_LABEL_VALUES = 256
OTHER = "other"
# The classic text format, which every Prometheus reads (names are plain ASCII here: no
# need for 1.0.0's escaping, which servers before Prometheus 3 do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def new_registry(service: str) -> CollectorRegistry:
    """A registry of one app's own, with the process's figures (CPU seconds, resident
    memory, open files: ``process_*``) and ``pvesphere_build_info{service, version} 1``."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    info = Gauge(
        PREFIX + "build_info", "The running version (always 1).", ["service", "version"], registry=registry
    )
    info.labels(service, VERSION).set(1)
    return registry


class BoundedLabel:
    """A label's values as met (node names, peers), at most ``limit`` of them; later ones
    are OTHER, so that a misbehaving peer cannot grow the metrics without end."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit or not value:
            return OTHER
        self.seen.add(value)
        return value


def counter_step(last: int, now: int) -> int:
    """What a cumulative count reported again adds to a counter: the rise since ``last``,
    or all of ``now`` when the count started over (a new receive, a restarted agent)."""
    return now if now < last else now - last


def metrics_handler(
    registry: CollectorRegistry, refresh: Callable[[], Awaitable[None]] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler of ``registry``; ``refresh`` runs first (figures read
    from a database at scrape time)."""

    async def metrics(request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return metrics
