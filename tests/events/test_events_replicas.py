"""Live events across coordinator replicas: two coordinator processes on one MariaDB.

A subscriber on A sees an upload made through B, from its first status to imported; a
replica that stops closes its subscribers with 1001. A is the session's MariaDB stack, B a
coordinator started beside it for this module.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from demo.stack import Stack, free_port
from shared.messages.events import CLOSE_GOING_AWAY
from tests.support.api import Api
from tests.support.events import Watch, start_watch, ws_url
from tests.support.images import raw_with_data
from tests.support.uploads import storage_id, upload


@pytest.fixture(scope="module")
def two(stack_mariadb: Stack) -> Iterator[tuple[Stack, Api, Api]]:
    """The session's MariaDB stack (A) and a replica of it (B) for this module's tests."""
    port = free_port()
    stack_mariadb.start_replica(port, free_port())
    a = Api(stack_mariadb.api, stack_mariadb.admin_token)
    b = Api(f"http://127.0.0.1:{port}/api/v1", stack_mariadb.admin_token)
    yield stack_mariadb, a, b
    stack_mariadb.replicas.pop(port).stop()


@pytest.mark.mariadb
def test_an_upload_through_b_is_seen_on_a(
    two: tuple[Stack, Api, Api], tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack, a, b = two
    image = raw_with_data(tmp_path_factory.mktemp("img") / "r.raw", 8, 4, seed=3)
    name = f"rep-{secrets.token_hex(3)}"

    def imported(w: Watch) -> bool:
        return any(m["kind"] == "upload" and m["status"] in ("imported", "failed") for m in w.events)

    async def run() -> Watch:
        watching = await start_watch(
            ws_url(a.base),
            token=a.token,
            params={"kind": "upload"},
            until=imported,
            timeout=90,
        )
        storage = await asyncio.to_thread(storage_id, b, stack, "local", "pve-node1")
        reply = await asyncio.to_thread(upload, b, stack, image, name, storage)
        assert reply.status == 200, reply.body
        return await watching

    try:
        got = asyncio.run(run())
    finally:
        image.unlink()
    statuses = [m["status"] for m in got.events]
    assert statuses[-1] == "imported", statuses
    assert "importing" in statuses or "uploaded" in statuses, statuses
    assert len(set(statuses)) >= 2


@pytest.mark.mariadb
def test_a_stopping_replica_closes_its_subscribers_with_1001(two: tuple[Stack, Api, Api]) -> None:
    stack, _, b = two
    port = int(b.base.split(":")[2].split("/")[0])

    async def run() -> Watch:
        watching = await start_watch(ws_url(b.base), token=b.token, timeout=30)
        await asyncio.to_thread(stack.replicas[port].stop)
        return await watching

    got = asyncio.run(run())
    assert got.close_code == CLOSE_GOING_AWAY, (got.close_code, got.close_reason)
