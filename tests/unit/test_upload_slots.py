"""Limits kept in the database (upload slots, shared limits): a limit in all and one per
token, each named when it is hit, and held across processes: two engines on one database
stand for two coordinator replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import LimitSlot
from coordinator.db.session import create_engine, session_factory
from coordinator.db.types import utcnow
from coordinator.shared_limits import SharedLimit, renew_all
from coordinator.upload_slots import UploadLimitReached, UploadSlots
from tests.support import mariadb

TTL = 30.0


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per kind for the module (a migration takes ~0.7 s)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('limits') / 'limits.db'}"
    else:
        request.getfixturevalue("mariadb_url")  # skipped (or failed in CI) like every MariaDB test
        name, url = mariadb.create_database()
        request.addfinalizer(lambda: mariadb.drop_database(name))
    upgrade_to_head(url)
    yield url


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """Two connection pools on one database, as two coordinator replicas have."""
    engines = [create_engine(database_url), create_engine(database_url)]
    async with session_factory(engines[0])() as session:
        await session.execute(delete(LimitSlot))
        await session.commit()
    yield [session_factory(engine) for engine in engines]
    for engine in engines:
        await engine.dispose()


async def test_one_token_gets_its_share_and_another_token_still_gets_in(replicas: list) -> None:
    a, b = (UploadSlots(db, total=4, per_token=2, ttl=TTL) for db in replicas)
    async with a.hold(1), b.hold(1):
        for replica in (a, b):
            with pytest.raises(UploadLimitReached) as refused:
                await replica.check(1)
            assert refused.value.error == "too_many_uploads_for_token"
            assert refused.value.message == (
                "this token already has as many uploads running as it may "
                "(max_uploads_per_token = 2); retry later"
            )
            with pytest.raises(UploadLimitReached):
                async with replica.hold(1):
                    pass
        async with b.hold(2):
            pass
    async with b.hold(1), a.hold(1):  # both were given back
        pass


async def test_the_total_is_named_when_every_slot_is_taken(replicas: list) -> None:
    a, b = (UploadSlots(db, total=3, per_token=2, ttl=TTL) for db in replicas)
    async with a.hold(1), b.hold(2), a.hold(3):
        with pytest.raises(UploadLimitReached) as refused:
            async with b.hold(4):
                pass
        assert refused.value.error == "too_many_uploads"
        assert (
            refused.value.message == "every upload slot is in use (max_concurrent_uploads = 3); retry later"
        )
    async with b.hold(4):  # and its token's slot was given back with it
        async with b.hold(4):
            pass


async def test_a_slot_is_given_back_when_its_upload_fails(replicas: list) -> None:
    slots = UploadSlots(replicas[0], total=1, per_token=1, ttl=TTL)
    with pytest.raises(RuntimeError):
        async with slots.hold(1):
            raise RuntimeError("the agent went away")
    async with slots.hold(1):
        pass


async def test_many_takers_at_once_on_two_replicas_get_exactly_the_limit(replicas: list) -> None:
    limits = [SharedLimit(db, "import", 3, TTL) for db in replicas]
    slots = await asyncio.gather(*(limits[i % 2].take(f"job-{i}") for i in range(16)))
    taken = [slot for slot in slots if slot is not None]
    assert sorted(slot.number for slot in taken) == [0, 1, 2]
    assert await limits[1].in_use() == 3


async def test_a_killed_holders_slot_comes_free_once_it_expires_and_a_live_one_is_renewed(
    replicas: list,
) -> None:
    a, b = (SharedLimit(db, "import", 1, TTL) for db in replicas)
    held = await a.take("job-1")
    assert held is not None
    assert await b.take("job-2") is None
    await renew_all(replicas[0], TTL)  # renewing keeps it
    assert await b.take("job-2") is None
    async with replicas[0]() as session:  # its holder stopped renewing: the lease time passes
        await session.execute(update(LimitSlot).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    taken = await b.take("job-2")
    assert taken is not None and taken.number == 0
    await a.give_back(held)  # late: the slot is someone else's now, and stays theirs
    assert await a.take("job-3") is None
