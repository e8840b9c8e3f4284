"""Identical reads that arrive together share one trip to the database; a read that arrives
after a batch went out gets a snapshot of its own (it sees what was written before it)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, select
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.db.fast_reads import Query, open_reads
from coordinator.db.shared_reads import SharedReads
from tests.unit.test_fast_reads import _BY_KIND, _THING, _database

_COUNT = Query(select(func.count()).select_from(_THING))


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[SharedReads]:
    engine = create_async_engine(_database(tmp_path / "t.db"))
    reads = SharedReads(open_reads(engine))
    yield reads
    await reads.close()
    await engine.dispose()


async def test_identical_reads_arriving_together_are_sent_once(shared: SharedReads) -> None:
    call = (_BY_KIND, {"kind": "a", "limit": 5})
    answers = await asyncio.gather(*(shared.fetch(call) for _ in range(8)))
    assert shared.sent == 1
    assert all(answer == answers[0] for answer in answers)
    assert [row[0] for row in answers[0][0]] == [1, 2]


async def test_reads_with_other_parameters_or_statements_are_not_shared(shared: SharedReads) -> None:
    a, b, count = await asyncio.gather(
        shared.fetch((_BY_KIND, {"kind": "a", "limit": 5})),
        shared.fetch((_BY_KIND, {"kind": "b", "limit": 5})),
        shared.fetch((_COUNT, {})),
    )
    assert shared.sent == 3
    assert [r[0] for r in a[0]] == [1, 2] and [r[0] for r in b[0]] == [3] and count == [[(4,)]]


async def test_a_read_arriving_after_the_batch_went_out_sees_what_was_written_meanwhile(
    shared: SharedReads, tmp_path: Path
) -> None:
    first = asyncio.ensure_future(shared.fetch((_COUNT, {})))
    await asyncio.sleep(0)  # the first read's batch is formed
    await asyncio.sleep(0)  # ... and sent
    writer = sqlite3.connect(tmp_path / "t.db")
    writer.execute("INSERT INTO thing VALUES (5, 'c', 0, NULL)")
    writer.commit()
    writer.close()
    later = await shared.fetch((_COUNT, {}))
    assert shared.sent == 2
    assert later == [[(5,)]]
    assert (await first) in ([[(4,)]], [[(5,)]])


async def test_a_reader_that_gives_up_leaves_the_others_their_answer(shared: SharedReads) -> None:
    call = (_BY_KIND, {"kind": "a", "limit": 5})
    quitter = asyncio.ensure_future(shared.fetch(call))
    stayer = asyncio.ensure_future(shared.fetch(call))
    await asyncio.sleep(0)
    quitter.cancel()
    assert [r[0] for r in (await stayer)[0]] == [1, 2]
    assert shared.sent == 1


async def test_an_error_reaches_every_reader_of_the_batch(shared: SharedReads) -> None:
    missing = Query(select(Table("nothing", MetaData(), Column("id", Integer)).c.id))
    results = await asyncio.gather(*(shared.fetch((missing, {})) for _ in range(3)), return_exceptions=True)
    assert shared.sent == 1
    assert all(isinstance(result, sa.OperationalError) for result in results)
