"""fast_reads on SQLite: compiled selects with named parameters and literals, values as the
API shows them, and a locked database read on a worker thread rather than on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.db.fast_reads import Compiled, Query, SqliteReads, open_reads
from coordinator.db.types import UtcDateTime

_META = MetaData()
_THING = Table(
    "thing",
    _META,
    Column("id", Integer, primary_key=True),
    Column("kind", String(10)),
    Column("done", Boolean),
    Column("at", UtcDateTime),
)
_BY_KIND = Query(
    select(_THING.c.id, _THING.c.done, _THING.c.at)
    .where(_THING.c.kind == bindparam("kind"), _THING.c.id != 99)
    .order_by(_THING.c.id)
    .limit(bindparam("limit"))
)


def _database(path: Path, wal: bool = True) -> str:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE thing (id INTEGER PRIMARY KEY, kind TEXT, done BOOLEAN, at DATETIME)")
    conn.executemany(
        "INSERT INTO thing VALUES (?, ?, ?, ?)",
        [(1, "a", 1, "2025-12-24 10:00:00.750000"), (2, "a", 0, None), (3, "b", 1, None), (99, "a", 0, None)],
    )
    conn.commit()
    conn.close()
    return f"sqlite+aiosqlite:///{path}"


async def test_rows_with_parameters_literals_and_converted_values(tmp_path: Path) -> None:
    engine = create_async_engine(_database(tmp_path / "t.db"))
    reads = open_reads(engine)
    try:
        (rows,) = await reads.fetch((_BY_KIND, {"kind": "a", "limit": 5}))
        assert rows == [(1, True, datetime(2025, 12, 24, 10, 0, 0, tzinfo=UTC)), (2, False, None)]
        (short,) = await reads.fetch((_BY_KIND, {"kind": "a", "limit": 1}), short=False)
        assert [r[0] for r in short] == [1]
    finally:
        await reads.close()
        await engine.dispose()


async def test_driver_errors_leave_as_sqlalchemy_errors(tmp_path: Path) -> None:
    engine = create_async_engine(_database(tmp_path / "t.db"))
    reads = open_reads(engine)
    missing = Query(select(Table("nothing", MetaData(), Column("id", Integer)).c.id))
    try:
        with pytest.raises(sa.OperationalError):
            await reads.fetch((missing, {}))
    finally:
        await reads.close()
        await engine.dispose()


async def test_a_locked_database_is_waited_for_on_a_worker_thread_not_on_the_loop(tmp_path: Path) -> None:
    url = _database(tmp_path / "t.db", wal=False)  # without WAL a writer's lock stops readers
    engine = create_async_engine(url)
    reads = open_reads(engine)
    assert isinstance(reads, SqliteReads)
    writer = sqlite3.connect(tmp_path / "t.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.5, lambda: writer.execute("ROLLBACK")).start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    try:
        (rows,) = await reads.fetch((_BY_KIND, {"kind": "b", "limit": 5}))
        assert [r[0] for r in rows] == [3]
        assert ticks >= 20  # the loop went on while the read waited out the lock
    finally:
        ticking.cancel()
        writer.close()
        await reads.close()
        await engine.dispose()


def test_a_statement_that_would_be_rendered_per_execution_is_refused() -> None:
    with pytest.raises(ValueError, match="IN"):
        Compiled(
            select(_THING.c.id).where(_THING.c.kind.in_(["a", "b"])),
            create_async_engine("sqlite+aiosqlite://").dialect,
        )


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "mysql+asyncmy://root@localhost/x"])
def test_every_hot_read_compiles_for_both_databases(url: str) -> None:
    import coordinator.app  # noqa: F401  (imports every route module and so every Query)
    from coordinator.db.fast_reads import DECLARED

    dialect = create_async_engine(url).dialect
    assert len(DECLARED) >= 17
    for query in DECLARED:
        if query.only not in (None, dialect.name):  # SQL of that database's own
            with pytest.raises(ValueError, match="only"):
                query.compiled(dialect)
        elif query.stmt.get_final_froms()[0] is not _THING:  # this module's own
            assert query.compiled(dialect).sql.startswith("SELECT")


def test_mariadb_datetimes_come_as_text_and_read_as_whole_seconds_in_utc() -> None:
    from asyncmy.constants import FIELD_TYPE

    from coordinator.db.fast_reads import _mysql_conversions, _utc_seconds

    assert _mysql_conversions()[FIELD_TYPE.DATETIME]("2025-12-24 10:00:00.5") == "2025-12-24 10:00:00.5"
    expected = datetime(2025, 12, 24, 10, 0, 0, tzinfo=UTC)
    for text in ("2025-12-24 10:00:00.500000", "2025-12-24 10:00:00"):  # DATETIME(6), DATETIME
        assert _utc_seconds(text) == expected


def test_mariadb_reads_may_send_several_statements_at_once() -> None:
    from asyncmy.constants import CLIENT

    from coordinator.db.fast_reads import MULTI_STATEMENTS

    assert MULTI_STATEMENTS == CLIENT.MULTI_STATEMENTS
