"""Live events over real WebSockets against a real stack (coordinator, agents, emulator).

One module-scoped stack on SQLite whose agents send slowly (a copy of 48 MiB takes ~4 s, so
progress is seen moving), with a second coordinator process on the same database file.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateSyncTask, TemplateUpload
from coordinator.events import tickets as event_tickets
from demo.stack import Stack
from shared.messages.events import CLOSE_TOO_SLOW
from shared.tickets import TicketSigner
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.db import task_row, with_session
from tests.support.events import StalledClient, Watch, refused, start_watch, transfer_ticket, watch, ws_url
from tests.support.uploads import multipart, node_ids, storage_id, upload_fields
from tests.sync.test_faults import local_template

SEND_RATE = 12 << 20  # bytes/s per agent: a 48 MiB copy takes ~4 s
HEARTBEAT = 5.0  # a ping every 5 s, a pong due within 2.5 s
QUEUE_MAX = 8  # polls of changes (2 s) a subscriber may fall behind by


@pytest.fixture(scope="module")
def events_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    stack = own_stack(
        request,
        tmp_path_factory,
        "events",
        "sqlite",
        agent_settings={"max_send_rate": SEND_RATE},
        coordinator_settings={
            "events_queue_max": QUEUE_MAX,
            "events_send_timeout": 2.0,
            "events_heartbeat": HEARTBEAT,
        },
    )
    return stack


@pytest.fixture(scope="module")
def api(events_stack: Stack) -> Api:
    return Api(events_stack.api, events_stack.admin_token)


@pytest.fixture(scope="module")
def template(api: Api, events_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A local-storage template on pve-node1 whose image is 48 MiB of data (a ~4 s copy)."""
    template_id, image = local_template(api, events_stack, tmp_path_factory.mktemp("img"), "ev", 48)
    image.unlink()
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
    status, body = refused(ws_url(api.base), token=api.token, params={"colour": "red"})
    assert status == 400 and "colour" in body["message"]
    sync_only = ws_url(api.base, "/templates/sync-tasks/ws")
    status, body = refused(sync_only, token=api.token, params={"kind": "upload"})
    assert status == 400 and "kind must be one or more of sync_task" in body["message"]
    plain = api.get("/events")  # not a WebSocket
    assert plain.status == 426 and plain.error == "upgrade_required" and "Upgrade: websocket" in plain.message


def test_a_sync_seen_moving_to_completed(api: Api, events_stack: Stack, template: int) -> None:
    """A subscriber sees a sync move to completed, bytes all done, at most 4 messages a
    second, and its version's rollout counted by status."""

    async def run() -> Watch:
        watching = await start_watch(
            ws_url(api.base),
            token=api.token,
            params={"template_id": str(template)},
            # the task's end and its version's (the same round, in either order)
            until=lambda w: all(
                any(m["kind"] == kind and m["status"] == "completed" for m in w.events)
                for kind in ("sync_task", "version")
            ),
            timeout=90,
        )
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
    # the version's rollout, as one execution: its tasks by status, to the end
    rollout = [m for m in got.events if m["kind"] == "version"]
    assert rollout[-1]["counts"] == {"completed": 1} and rollout[-1]["version"] == 1, rollout
    assert any(m["counts"].get("syncing") for m in rollout), rollout
    times = [t for t, m in got.messages if m["kind"] == "sync_task"]
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 0.9, f"more than 4 messages a second: {times}"


def wait_status(api: Api, task_id: int, wanted: set[str], timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        task = api.get(f"/templates/sync-tasks/{task_id}").ok()
        if task["status"] in wanted or time.monotonic() > deadline:
            return task  # type: ignore[no-any-return]
        time.sleep(0.1)


def test_the_current_state_comes_first_then_the_changes(api: Api, events_stack: Stack, template: int) -> None:
    """Connecting mid-copy: the task's current state first (snapshot), then its changes to
    the end; the sync-tasks route sends nothing else, and task_id narrows it to one task."""
    task_id = sync_to(api, events_stack, template, "pve-node3")
    assert wait_status(api, task_id, {"syncing", "importing", "completed"})["status"] == "syncing"
    got = asyncio.run(
        watch(
            ws_url(api.base, "/templates/sync-tasks/ws"),
            token=api.token,
            params={"task_id": str(task_id)},
            until=completed("sync_task", task_id),
            timeout=90,
        )
    )
    first, *rest = got.events
    assert first["snapshot"] is True and first["id"] == task_id and first["status"] == "syncing"
    assert rest and all("snapshot" not in m for m in rest)
    assert {(m["kind"], m["id"]) for m in got.events} == {("sync_task", task_id)}
    assert rest[-1]["status"] == "completed" and rest[-1]["bytes_done"] == rest[-1]["bytes_total"]
    # connected after the end: nothing of it is active any more, so nothing is sent
    after = asyncio.run(
        watch(ws_url(api.base), token=api.token, params={"task_id": str(task_id)}, timeout=1.5)
    )
    assert after.events == [] and after.close_code is None


def test_tickets(api: Api, events_stack: Stack) -> None:
    """A ticket opens the stream without a header; an expired one, a transfer ticket and the
    ticket of a revoked token do not (401 before the upgrade)."""
    url = ws_url(api.base)
    ticket = api.post("/events/ticket").ok()
    expires = datetime.fromisoformat(ticket["expires_at"])
    assert 20 <= (expires - datetime.now(UTC)).total_seconds() <= 31
    opened = asyncio.run(watch(url, params={"ticket": ticket["ticket"]}, timeout=1.0))
    assert opened.close_code is None
    assert api.as_token(ticket["ticket"]).get("/templates").status == 401  # for events only

    signer = TicketSigner(events_stack.base / "ticket-signing.key")  # every replica's key
    old, _ = event_tickets.issue(signer, 1, now=time.time() - 60)
    status, body = refused(url, params={"ticket": old})
    assert status == 401 and "expired" in body["message"]
    transfer = transfer_ticket(signer)
    status, body = refused(url, params={"ticket": transfer})
    assert status == 401 and "not an events ticket" in body["message"]

    name = f"viewer-{secrets.token_hex(3)}"
    secret = events_stack.coordinator_cli(
        "token", "create", "--name", name, "--role", "viewer"
    ).stdout.strip()
    viewer_ticket = api.as_token(secret).post("/events/ticket").ok()["ticket"]
    assert asyncio.run(watch(url, params={"ticket": viewer_ticket}, timeout=1.0)).close_code is None
    events_stack.coordinator_cli("token", "revoke", name)
    status, body = refused(url, params={"ticket": viewer_ticket})
    assert status == 401 and "revoked" in body["message"]
    status, _ = refused(url, params={"ticket": viewer_ticket[:-3] + "AAA"})
    assert status == 401


def test_a_client_that_stops_reading_is_dropped_and_others_go_on(
    api: Api, events_stack: Stack, template: int
) -> None:
    """300 objects change every 0.3 s: a client that reads nothing is closed with 4008 within
    seconds, one that reads gets every object's final state, and the API answers meanwhile."""
    ids = with_session(events_stack.database_url, lambda s: add_failed_tasks(s, template, 300))
    try:
        stalled = StalledClient(
            "127.0.0.1",
            events_stack.s.coordinator_port,
            f"/api/v1/events?template_id={template}",
            api.token or "",
        )

        async def run() -> Watch:
            reading = await start_watch(
                ws_url(api.base),
                token=api.token,
                params={"template_id": str(template), "kind": "sync_task"},
                until=lambda w: sum(m["progress"] == 10 for m in w.events) >= len(ids),
                timeout=60,
            )
            for step in range(1, 11):
                await asyncio.to_thread(
                    with_session, events_stack.database_url, lambda s, step=step: bump(s, ids, step)
                )
                await asyncio.sleep(0.3)
            return await reading

        reader_got = asyncio.run(run())
        code, reason, texts = stalled.close_code()
        assert code == CLOSE_TOO_SLOW, (code, reason, texts)
        assert "read faster" in reason
        finals = {m["id"] for m in reader_got.events if m["progress"] == 10}
        assert finals == set(ids) and reader_got.close_code is None
        assert api.get("/templates/sync-tasks", params={"template_id": template}).status == 200
    finally:
        with_session(events_stack.database_url, lambda s: remove_tasks(s, ids))


async def add_failed_tasks(session: AsyncSession, template_id: int, count: int) -> list[int]:
    upload_row = await session.scalar(select(TemplateUpload).where(TemplateUpload.template_id == template_id))
    assert upload_row is not None
    rows = [task_row(upload_row, 100 + i, error_message="made by the test") for i in range(count)]
    for row in rows:  # finished: no job of the coordinator touches them
        row.status, row.active_key = "failed", None
    session.add_all(rows)
    await session.commit()
    return [row.id for row in rows]


async def bump(session: AsyncSession, ids: list[int], step: int) -> None:
    await session.execute(update(TemplateSyncTask).where(TemplateSyncTask.id.in_(ids)).values(progress=step))
    await session.commit()


async def remove_tasks(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(delete(TemplateSyncTask).where(TemplateSyncTask.id.in_(ids)))
    await session.commit()


def test_a_client_that_answers_no_ping_is_dropped(api: Api) -> None:
    async def run() -> tuple[float, list[str]]:
        seen = []
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                ws_url(api.base), headers={"Authorization": f"Bearer {api.token}"}, autoping=False
            ) as ws,
        ):
            started = time.monotonic()
            while True:
                msg = await ws.receive(timeout=HEARTBEAT * 3)
                seen.append(msg.type.name)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return time.monotonic() - started, seen

    took, seen = asyncio.run(run())
    assert "PING" in seen and took <= HEARTBEAT * 1.5 + 2, (took, seen)


def test_a_clone_seen_to_its_end(api: Api, events_stack: Stack, template: int) -> None:
    """A clone on the template's import node: kind=clone alone, pending to completed."""
    node = node_ids(api, events_stack)["pve-node1"]

    async def run() -> tuple[Watch, int]:
        watching = await start_watch(
            ws_url(api.base),
            token=api.token,
            params={"kind": "clone", "template_id": str(template)},
            until=lambda w: any(m["status"] in ("completed", "failed") for m in w.events),
            timeout=60,
        )
        body = {"node_id": node, "name": f"ev-clone-{secrets.token_hex(2)}"}
        clone = await asyncio.to_thread(lambda: api.post(f"/templates/{template}/clone", json=body).ok())
        return await watching, int(clone["clone_id"])

    got, clone_id = asyncio.run(run())
    assert {(m["kind"], m["id"]) for m in got.events} == {("clone", clone_id)}
    assert got.events[-1]["status"] == "completed" and got.events[-1]["node_id"] == node, got.events


def paced_upload(stack: Stack, token: str, name: str, storage: int, size: int, rate: int) -> dict[str, Any]:
    """POST /templates/upload with a Content-Length, the file's bytes sent at ``rate`` bytes/s
    (random: nothing to make smaller); the answer's data."""
    content_type, head, tail = multipart(upload_fields(stack, name, storage), f"{name}.raw")
    piece = rate // 8

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // piece):
            time.sleep(0.125)
            yield os.urandom(piece)
        yield tail

    conn = http.client.HTTPConnection(stack.s.host, stack.s.coordinator_port, timeout=60)
    try:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": content_type,
            "Content-Length": str(len(head) + size + len(tail)),
        }
        conn.request("POST", "/api/v1/templates/upload", body=body(), headers=headers)
        answer = conn.getresponse()
        data = json.loads(answer.read())
    finally:
        conn.close()
    assert answer.status == 200, data
    return data["data"]  # type: ignore[no-any-return]


def test_an_upload_seen_while_its_bytes_move(api: Api, events_stack: Stack) -> None:
    """Someone else than the uploader watches an upload: its bytes received rising toward the
    request's length while it streams, then the file's size and the import to its end."""
    size, rate = 24 << 20, 8 << 20  # ~3 s
    name = f"watched-{secrets.token_hex(3)}"
    local = storage_id(api, events_stack, "local", "pve-node1")

    async def run() -> tuple[Watch, dict[str, Any]]:
        watching = await start_watch(
            ws_url(api.base),
            token=api.token,
            params={"kind": "upload"},
            until=lambda w: any(
                m["status"] in ("imported", "failed") and m.get("bytes_done") == size for m in w.events
            ),
            timeout=60,
        )
        answer = await asyncio.to_thread(paced_upload, events_stack, api.token, name, local, size, rate)
        return await watching, answer

    got, answer = asyncio.run(run())
    mine = [m for m in got.events if m["id"] == answer["upload_id"]]
    streaming = [m for m in mine if m["status"] == "uploading"]
    received = [m["bytes_done"] for m in streaming]
    assert len({r for r in received if r > 0}) >= 2, streaming  # seen rising, more than once
    assert received == sorted(received) and received[-1] < size, received
    assert all(m["bytes_total"] > size for m in streaming if m["bytes_done"])  # the request's length
    assert all(0 <= m["progress"] <= 99 for m in streaming)
    assert max(m["rate_bytes_per_sec"] for m in streaming) > 0
    assert mine[-1]["status"] == "imported" and mine[-1]["bytes_done"] == mine[-1]["bytes_total"] == size
