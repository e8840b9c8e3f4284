"""The hot reads' msgspec envelope says what errors.success says, byte for byte once parsed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec

from coordinator.api.errors import success
from coordinator.api.fast_json import ok, ok_json, ok_page
from coordinator.api.pagination import Page
from coordinator.api.sync_task_reads import NodeRef, SyncTaskOut
from coordinator.db.fast_reads import _utc_seconds


def _task(created: datetime, ended: datetime | None) -> SyncTaskOut:
    return SyncTaskOut(
        task_id=7,
        template_id=1,
        version=2,
        template_name='débian-12 "x"',
        source_node=NodeRef(node_id=1, node_name="pve-node1"),
        target_node=NodeRef(node_id=2, node_name="pve-node2"),
        storage_name="local",
        status="failed",
        progress=40,
        sync_start_time=created,
        sync_end_time=ended,
        error_message="agent of pve-node2: \u2028 gone",
        bytes_total=2**40,
        bytes_done=0,
        bytes_sent=0,
        bytes_reused=0,
        rate_bytes_per_sec=0,
        attempts=3,
        vmid=None,
        created_at=created,
    )


def test_the_same_document_as_the_json_dumps_envelope() -> None:
    stored = "2025-12-24 10:00:00.987654"  # as SQLite keeps a UtcDateTime
    as_orm = datetime(2025, 12, 24, 10, 0, 0, 987654, tzinfo=UTC)  # as the ORM gives it
    page_orm = Page(total=1, page=1, page_size=10, list=[_task(as_orm, None)])
    page_fast = Page(total=1, page=1, page_size=10, list=[_task(_utc_seconds(stored), None)])  # type: ignore[arg-type]
    before = success(msgspec.to_builtins(page_orm, builtin_types=(datetime,)))
    after = ok(page_fast)
    assert after.content_type == before.content_type == "application/json"
    assert after.status == before.status == 200
    assert json.loads(after.body) == json.loads(before.body)  # type: ignore[arg-type]
    assert json.loads(after.body)["data"]["list"][0]["created_at"] == "2025-12-24T10:00:00Z"  # type: ignore[arg-type]


def test_times_from_mariadb_are_whole_seconds_in_utc() -> None:
    naive = datetime(2025, 12, 24, 10, 0, 0, 5)  # DATETIME(6): naive UTC
    assert _utc_seconds(naive) == datetime(2025, 12, 24, 10, 0, 0, tzinfo=UTC)
    assert _utc_seconds(None) is None


def test_a_page_spliced_around_written_json_is_the_encoded_page() -> None:
    created = datetime(2025, 12, 24, 10, 0, 0, tzinfo=UTC)
    tasks = [_task(created, None), _task(created, created)]
    written = msgspec.json.encode(tasks)  # as the database writes the list (json_select)
    spliced = ok_page(7, 2, 2, written)
    encoded = ok(Page(total=7, page=2, page_size=2, list=tasks))
    assert spliced.body == encoded.body
    assert ok_json(msgspec.json.encode(tasks[0])).body == ok(tasks[0]).body
    assert json.loads(ok_page(0, 9, 10, b"[]").body)["data"] == {  # type: ignore[arg-type]
        "total": 0,
        "page": 9,
        "page_size": 10,
        "list": [],
    }
