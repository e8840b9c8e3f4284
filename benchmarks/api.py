"""``api``: the coordinator's read routes under load, at 1k, 100k and 1M sync tasks (issue 12, item 8).

For each database (SQLite; MariaDB at 127.0.0.1:3306 when it answers) the coordinator runs
as ``make demo`` starts it (the emulator for its cluster, migrations, the plain-HTTP
listener; no agents: read routes do not need them), the emulated cluster is registered,
one template is added and its sync-task history grows to each size in bulk inserts
(``api_seed``). At each size wrk (8 connections, 2 threads) measures every read route, and
in the same run a bare aiohttp JSON handler on uvloop (``baselines/bare_json.py``): the
ceiling a route can reach on this machine, against which req/s is given as a ratio.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import api_seed, wrk
from benchmarks.base import Benchmark, Options
from benchmarks.report import Target, table
from demo.stack import Stack, StackSettings, free_port, http_json, port_is_free

SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
CONNECTIONS = 8
SECONDS = 5.0
QUICK_SECONDS = 2.0
MARIADB = ("root", "127.0.0.1", 3306)

# Targets (issue 12, item 8), each route at the largest size.
MIN_RATIO_TO_BARE = 0.2
MAX_P99_MS = 20.0
MAX_GROWTH = 1.5  # median latency at the largest size / at the smallest


@dataclass(frozen=True)
class Measured:
    backend: str
    size: int
    route: str
    result: wrk.WrkResult
    bare: wrk.WrkResult


def _routes(template_id: int, task_id: int) -> dict[str, str]:
    """Every read route a user polls, with the benchmark's template and one old task."""
    tasks = "/api/v1/templates/sync-tasks"
    return {
        "/healthz": "/healthz",
        "GET /templates (one)": "/api/v1/templates",
        "GET /templates/{id}": f"/api/v1/templates/{template_id}",
        "GET /templates/{id}/instances": f"/api/v1/templates/{template_id}/instances",
        "GET /templates/sync-tasks": tasks,
        "... ?template_id&status&page=50": f"{tasks}?template_id={template_id}&status=completed&page=50",
        "GET /templates/sync-tasks/{id}": f"{tasks}/{task_id}",
        "GET /clusters": "/api/v1/clusters",
        "GET /nodes": "/api/v1/nodes",
        "GET /storages": "/api/v1/storages",
        "GET /agents": "/api/v1/agents",
    }


class _BareJson:
    """The baseline server, a process of its own as the coordinator is."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines.bare_json", str(self.port)])
        deadline = time.monotonic() + 20
        while port_is_free(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare aiohttp handler did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def _mariadb(sql: str) -> None:
    import asyncmy

    user, host, port = MARIADB
    conn = await asyncmy.connect(host=host, port=port, user=user, connect_timeout=3)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    finally:
        conn.close()


def _mariadb_database() -> tuple[str, str] | None:
    """(name, URL) of a fresh database, or None when MariaDB does not answer."""
    name = f"pvesphere_bench_{secrets.token_hex(4)}"
    try:
        asyncio.run(_mariadb(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    except Exception as exc:  # any connect failure: no MariaDB here
        print(f"  MariaDB at {MARIADB[1]}:{MARIADB[2]} not reachable ({exc}); SQLite only", flush=True)
        return None
    user, host, port = MARIADB
    return name, f"mysql+asyncmy://{user}@{host}:{port}/{name}?charset=utf8mb4"


def _start(base: Path, database_url: str) -> Stack:
    """Emulator and coordinator (no agents), migrated, with an admin token and the cluster registered."""
    stack = Stack(
        StackSettings(
            base_dir=base,
            coordinator_port=free_port(),
            coordinator_tls_port=free_port(),
            emulator_port=free_port(),
            database_url=database_url,
            coordinator_settings={"log_level": "WARNING"},
        )
    )
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        stack.start_emulator()
        stack.write_coordinator_config()
        stack.coordinator_cli("migrate")
        stack.start_coordinator()
        stack.admin_token = stack._ensure_admin_token()
        stack.cluster_id = stack.register_cluster()
        _wait_inventory(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def _wait_inventory(stack: Stack, timeout: float = 60) -> None:
    """Registering reads the cluster's nodes and storages; the seed needs them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, nodes = http_json("GET", stack.api + "/nodes?page_size=100", stack.admin_token)
        _, storages = http_json("GET", stack.api + "/storages?page_size=100", stack.admin_token)
        if len(nodes["data"]["list"]) >= 2 and storages["data"]["list"]:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the emulated cluster's nodes and storages did not appear in {timeout:.0f}s")


def _measure_backend(
    backend: str, url: str, options: Options, bare: _BareJson, wrk_path: str
) -> list[Measured]:
    sizes = QUICK_SIZES if options.quick else SIZES
    seconds = QUICK_SECONDS if options.quick else SECONDS
    stack = _start(options.workdir / backend, url)
    out: list[Measured] = []
    try:
        assert stack.cluster_id is not None
        template_id = api_seed.seed_template(url, stack.cluster_id)
        task_id: int | None = None
        for size in sizes:
            started = time.monotonic()
            api_seed.top_up(url, template_id, size)
            print(f"  {backend}: {size} sync tasks (seeded in {time.monotonic() - started:.0f}s)", flush=True)
            if task_id is None:
                page = http_json("GET", stack.api + "/templates/sync-tasks?page_size=1", stack.admin_token)[1]
                task_id = int(page["data"]["list"][0]["task_id"])
            assert stack.coordinator is not None
            pid = stack.coordinator.pid
            baseline = wrk.run(wrk_path, bare.url, None, CONNECTIONS, seconds, bare.proc.pid)
            for route, path in _routes(template_id, task_id).items():
                result = wrk.run(
                    wrk_path, stack.coordinator_url + path, stack.admin_token, CONNECTIONS, seconds, pid
                )
                out.append(Measured(backend, size, route, result, baseline))
            _print_size(backend, size, baseline, [m for m in out if m.size == size])
    finally:
        stack.stop()
    return out


def _print_size(backend: str, size: int, bare: wrk.WrkResult, rows: list[Measured]) -> None:
    def cells(name: str, r: wrk.WrkResult) -> list[str]:
        ratio = f"{r.req_per_s / bare.req_per_s:.3f}"
        return [
            name,
            f"{r.req_per_s:.0f}",
            ratio,
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.server_cpu_ms:.2f}",
        ]

    print(f"\n  {backend}, {size} sync tasks, wrk -c{CONNECTIONS} (CPU: the server process's, per request):")
    lines = [cells("bare aiohttp JSON", bare), *(cells(m.route, m.result) for m in rows)]
    print(table(["route", "req/s", "x bare", "p50 ms", "p99 ms", "CPU ms"], lines), flush=True)


def targets(measured: list[Measured]) -> list[Target]:
    """Per backend and route: ratio and p99 at the largest size, median latency largest/smallest."""
    out: list[Target] = []
    for backend in dict.fromkeys(m.backend for m in measured):
        mine = [m for m in measured if m.backend == backend]
        smallest, largest = min(m.size for m in mine), max(m.size for m in mine)
        for route in dict.fromkeys(m.route for m in mine):
            small = next(m for m in mine if m.route == route and m.size == smallest)
            large = next(m for m in mine if m.route == route and m.size == largest)
            at = f"{backend} {route}, {largest:,} tasks"
            ratio = large.result.req_per_s / large.bare.req_per_s
            out.append(Target(f"req/s vs bare handler, {at}", ratio, ">=", MIN_RATIO_TO_BARE, "x"))
            out.append(
                Target(f"p99 at {CONNECTIONS} clients, {at}", large.result.p99_ms, "<=", MAX_P99_MS, "ms")
            )
            growth = large.result.p50_ms / small.result.p50_ms
            name = f"median latency {largest:,}/{smallest:,} tasks, {backend} {route}"
            out.append(Target(name, growth, "<=", MAX_GROWTH, "x"))
    return out


def run(options: Options) -> list[Target]:
    wrk_path = wrk.ensure_wrk()
    backends = [("sqlite", f"sqlite+aiosqlite:///{options.workdir / 'sqlite' / 'coordinator.db'}")]
    mariadb = _mariadb_database()
    if mariadb is not None:
        backends.append(("mariadb", mariadb[1]))
    bare = _BareJson()
    measured: list[Measured] = []
    try:
        for backend, url in backends:
            measured += _measure_backend(backend, url, options, bare, wrk_path)
    finally:
        bare.stop()
        if mariadb is not None:
            asyncio.run(_mariadb(f"DROP DATABASE IF EXISTS {mariadb[0]}"))
    return targets(measured)


BENCHMARK = Benchmark(
    "api",
    "the coordinator's read routes at 1k/100k/1M sync tasks (SQLite, MariaDB) vs a bare aiohttp handler",
    run,
)
