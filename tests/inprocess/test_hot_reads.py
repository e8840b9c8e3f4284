"""The API's hot reads (coordinator/db/fast_reads.py) outlive a database that closed their
kept connections (MariaDB's wait_timeout, a restart): the next request reads on a new one."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from coordinator.appkeys import ENGINE, READS
from coordinator.db.fast_reads import MysqlReads
from coordinator.db.shared_reads import SharedReads
from tests.support.inprocess import InProcess


@pytest.mark.mariadb
def test_reads_go_on_after_the_server_closed_the_kept_connections(coordinator_mariadb: InProcess) -> None:
    """MariaDB only: SQLite's connections are files, nothing closes them."""
    coordinator = coordinator_mariadb
    shared = coordinator.app[READS]
    assert isinstance(shared, SharedReads)
    reads = shared.reads
    assert isinstance(reads, MysqlReads)
    api = coordinator.api
    assert api.get("/templates/sync-tasks").status == 200  # a connection is kept

    async def kill_kept() -> int:
        ids = [conn.thread_id() if callable(conn.thread_id) else conn.thread_id for conn in reads._idle]
        async with coordinator.app[ENGINE].connect() as conn:
            for thread_id in ids:
                await conn.execute(text(f"KILL CONNECTION {int(thread_id)}"))
        return len(ids)

    assert coordinator.run(kill_kept()) >= 1
    for _ in range(3):
        reply = api.get("/templates/sync-tasks?status=failed")
        assert reply.status == 200, reply.body
        assert reply.ok()["total"] >= 0
