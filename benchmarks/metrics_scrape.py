"""What a /metrics scrape costs the coordinator's database at a large history:
``python -m benchmarks.metrics_scrape [--rows 1000000]``.

A migrated SQLite database gets ``rows`` sync tasks, uploads and clones each (history:
mostly finished, statuses cycling), copied in SQL from one real row of each (the
coordinator's own tables and triggers: the sync-task counts stay exact); then
coordinator/metrics.read_figures (what a scrape reads, at most every 5 s) is timed, and
the whole answer (generate_latest) once the figures are in.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy import Table

from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import Clone, PveCluster, TemplateSyncTask, TemplateUpload
from coordinator.db.session import create_engine, session_factory
from coordinator.metrics import HISTORY_CACHE_SECONDS, CoordinatorMetrics, read_figures
from coordinator.states import template
from tests.support.db import task_row, upload_row

STATUSES = ("completed",) * 16 + ("failed",) * 3 + ("canceled",)


async def _first_rows(url: str) -> None:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        cluster = PveCluster(cluster_name="c", api_url="https://pve", token_id="t", token_secret="s")
        session.add(cluster)
        await session.flush()
        tpl = template.new_template("bench", cluster_id=cluster.id)
        session.add(tpl)
        await session.flush()
        up = upload_row(tpl)
        session.add(up)
        await session.flush()
        session.add(task_row(up, 2))
        session.add(
            Clone(
                template_id=tpl.id, upload_id=up.id, cluster_id=cluster.id, node_id=1, node_name="n1",
                source_node_id=1, source_node_name="n1", storage_name="local", name="c",
            )
        )  # fmt: skip
        await session.commit()
    await engine.dispose()


def _copy_sql(table: Table, rows: int, overrides: dict[str, str]) -> str:
    """``rows`` copies of the table's first row, columns in ``overrides`` computed from n."""
    columns = [c.name for c in table.columns if c.name != "id"]
    values = [overrides.get(c, c) for c in columns]
    statuses = " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(STATUSES))
    return (
        f"WITH RECURSIVE cnt(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM cnt WHERE n < {rows}) "
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM {table.name}, cnt WHERE {table.name}.id = 1"
    ).replace("STATUS", f"CASE n % {len(STATUSES)} {statuses} END")


def _seed(db_file: Path, rows: int) -> float:
    import sqlite3

    started = time.monotonic()
    conn = sqlite3.connect(db_file)
    tables: list[tuple[Any, dict[str, str]]] = [
        (TemplateSyncTask, {"status": "STATUS", "uid": "printf('b%030d', n)", "active_key": "NULL"}),
        (TemplateUpload, {"status": "STATUS", "version": "n + 1"}),
        (Clone, {"status": "STATUS", "vmid_key": "NULL"}),
    ]
    for model, overrides in tables:
        conn.execute(_copy_sql(model.__table__, rows - 1, overrides))
        conn.commit()
    conn.close()
    return time.monotonic() - started


async def _measure(url: str, reps: int) -> tuple[list[float], list[float], float, int]:
    """Times of every count read (each HISTORY_CACHE_SECONDS), of the active ones alone
    (the other scrapes), of rendering the answer; the sync tasks counted."""
    engine = create_engine(url)
    db = session_factory(engine)
    full, active = [], []
    figures = None
    for _ in range(reps):
        started = time.perf_counter()
        async with db() as session:
            figures = await read_figures(session, 15.0)
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with db() as session:
            await read_figures(session, 15.0, figures)
        active.append(time.perf_counter() - started)
    metrics = CoordinatorMetrics(15.0)
    metrics.attach(engine, db)
    await metrics.refresh()
    started = time.perf_counter()
    generate_latest(metrics.registry)
    render = time.perf_counter() - started
    await engine.dispose()
    assert figures is not None
    return full, active, render, sum(n for (kind, _s), n in figures.tasks.items() if kind == "sync_task")


def _ms(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scrape")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of each kind (default 1M)")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        db_file = Path(work) / "coordinator.db"
        url = f"sqlite+aiosqlite:///{db_file}"
        upgrade_to_head(url)
        asyncio.run(_first_rows(url))
        seeded = _seed(db_file, args.rows)
        full, active, render, sync_tasks = asyncio.run(_measure(url, args.reps))
    print(f"seeded {args.rows} sync tasks, uploads and clones each in {seeded:.0f} s")
    print(f"sync tasks counted: {sync_tasks}")
    print(f"every count (read each {HISTORY_CACHE_SECONDS:.0f} s): {_ms(full)} over {args.reps} reads")
    print(f"active work's counts (the other scrapes): {_ms(active)}")
    print(f"generate_latest: {render * 1000:.2f} ms")


if __name__ == "__main__":
    main()
