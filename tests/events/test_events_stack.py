"""Live events over real WebSockets against a real stack (coordinator, agents, emulator).

One module-scoped stack on SQLite whose agents send slowly (a copy of 48 MiB takes ~4 s, so
progress is seen moving), with a second coordinator process on the same database file.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from demo.stack import Stack, free_port
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.events import Watch, refused, watch, ws_url
from tests.support.images import raw_with_data
from tests.support.uploads import node_ids, storage_id, upload, wait_import

SEND_RATE = 12 << 20  # bytes/s per agent: a 48 MiB copy takes ~4 s
QUEUE_MAX = 16


@pytest.fixture(scope="module")
def events_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    stack = own_stack(
        request,
        tmp_path_factory,
        "events",
        "sqlite",
        agent_settings={"max_send_rate": SEND_RATE},
        coordinator_settings={"events_queue_max": QUEUE_MAX, "events_send_timeout": 2.0},
    )
    return stack


@pytest.fixture(scope="module")
def api(events_stack: Stack) -> Api:
    return Api(events_stack.api, events_stack.admin_token)


@pytest.fixture(scope="module")
def replica(events_stack: Stack) -> Api:
    """A second coordinator process on the same SQLite file (and keys)."""
    port = free_port()
    events_stack.start_replica(port, free_port())
    return Api(f"http://127.0.0.1:{port}/api/v1", events_stack.admin_token)


@pytest.fixture(scope="module")
def template(api: Api, events_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> int:
    image = raw_with_data(tmp_path_factory.mktemp("img") / "events.raw", 48, 48, seed=7)
    data = upload(
        api,
        events_stack,
        image,
        f"ev-{secrets.token_hex(3)}",
        storage_id(api, events_stack, "local", "pve-node1"),
    )
    image.unlink()
    template_id = int(data.ok()["template_id"])
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    return template_id


def sync_to(api: Api, stack: Stack, template_id: int, node: str) -> int:
    ids = node_ids(api, stack)
    started = api.post(f"/templates/{template_id}/sync", json={"target_node_ids": [ids[node]]}).ok()
    return int(started["sync_tasks"][0]["task_id"])


def completed(kind: str, object_id: int):  # type: ignore[no-untyped-def]
    def done(w: Watch) -> bool:
        return any(m["status"] in ("completed", "failed") for _, m in w.of(kind, object_id))

    return done


def test_without_auth_is_401_before_the_upgrade(api: Api) -> None:
    status, body = refused(ws_url(api.base))
    assert status == 401 and body["data"]["error"] == "unauthorized"


def test_bad_filter_is_a_400_naming_it(api: Api) -> None:
    status, body = refused(ws_url(api.base), token=api.token, params={"kind": "nope"})
    assert status == 400 and "kind" in body["message"] and "kind" in body["data"]["fields"]
    status, body = refused(ws_url(api.base), token=api.token, params={"template_id": "x"})
    assert status == 400 and "template_id" in body["message"]


def test_a_sync_seen_moving_to_completed(api: Api, events_stack: Stack, template: int) -> None:
    """A subscriber on A sees a sync started through B move to completed, bytes all done,
    at most 4 messages a second."""

    async def run() -> Watch:
        started = asyncio.Event()
        watching = asyncio.create_task(
            watch(
                ws_url(api.base),
                token=api.token,
                params={"template_id": str(template)},
                until=lambda w: any(
                    m["kind"] == "sync_task" and m["status"] == "completed" for m in w.events
                ),
                timeout=90,
                started=started,
            )
        )
        await started.wait()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(sync_to, api, events_stack, template, "pve-node2")
        return await watching

    got = asyncio.run(run())
    tasks = [m for m in got.events if m["kind"] == "sync_task"]
    assert tasks, got.events
    final = tasks[-1]
    assert final["status"] == "completed" and final["bytes_done"] == final["bytes_total"] > 0
    statuses = [m["status"] for m in tasks]
    assert "syncing" in statuses, statuses
    moving = [m for m in tasks if m["status"] == "syncing"]
    assert len({m["bytes_done"] for m in moving}) >= 2, moving  # progress seen moving
    times = [t for t, m in got.messages if m["kind"] == "sync_task"]
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 0.9, f"more than 4 messages a second: {times}"
