"""The sync-task reads of GET /templates/sync-tasks and /templates/sync-tasks/{id}: the
answer's JSON written by the database (coordinator/db/json_select.py), compiled once.

Each list filter (none, template, status, both) is its own statement, so that every one
is compiled once and read in the order of an index, never sorted (see the indexes of
TemplateSyncTask). A page and its exact total are one statement (one snapshot, one round
trip), the total from the counts the database keeps (coordinator/db/sync_task_counts.py).
On SQLite the page's tasks come back as one JSON array written by SQLite
(coordinator/db/json_select.py: the handler 0.126 -> 0.104 ms of CPU for a page of 10 at
100k tasks), on MariaDB as rows (its JSON costs the server more than it saves here).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta
from sqlalchemy import bindparam, select
from sqlalchemy.sql.elements import ColumnElement

from coordinator.api.timefmt import UtcTime
from coordinator.db import sync_task_counts
from coordinator.db.fast_reads import AnySelect, Query, Reads, Row
from coordinator.db.json_select import json_list, object_of, utc_text, writes_json
from coordinator.db.models import TemplateSyncTask, VmTemplate
from shared.validation import Model


class NodeRef(Model):
    node_id: int
    node_name: str


class SyncTaskOut(Model):
    task_id: int
    template_id: int
    version: Annotated[int, Meta(description="the template's version it copies")]
    template_name: str
    source_node: NodeRef
    target_node: NodeRef
    storage_name: str
    status: str
    progress: int
    sync_start_time: UtcTime | None
    sync_end_time: UtcTime | None
    error_message: str | None
    bytes_total: int
    bytes_done: int
    bytes_sent: Annotated[int, Meta(description="bytes that crossed the network for this copy")]
    bytes_reused: Annotated[
        int, Meta(description="bytes the target already had (an earlier version's, or zeros)")
    ]
    rate_bytes_per_sec: int
    attempts: int
    vmid: int | None
    created_at: UtcTime


# Declared in coordinator/db/models.py (TemplateSyncTask) for the filtered list.
_TEMPLATE_STATUS_INDEX = "ix_template_sync_task_template_status_id"
_T = TemplateSyncTask
# The name as a subquery per task, not a join: with a join MariaDB starts from the one
# template and sorts all its tasks for a page; this way every plan walks the tasks' index.
_NAME = select(VmTemplate.template_name).where(VmTemplate.id == _T.template_id).scalar_subquery()
# What a task is made of, in the order of SyncTaskOut's fields (a node is its id and name).
_SOURCE = (
    _T.id,
    _T.template_id,
    _T.version,
    _NAME.label("template_name"),
    _T.source_node_id,
    _T.source_node_name,
    _T.target_node_id,
    _T.target_node_name,
    _T.storage_name,
    _T.status,
    _T.progress,
    _T.sync_start_time,
    _T.sync_end_time,
    _T.error_message,
    _T.bytes_total,
    _T.bytes_done,
    _T.bytes_sent,
    _T.bytes_reused,
    _T.rate_bytes_per_sec,
    _T.attempts,
    _T.vmid,
    _T.created_at,
)


def _task_out(r: Row) -> SyncTaskOut:
    """A row of ``_SOURCE`` as the API shows it (MariaDB: rows, not JSON)."""
    return SyncTaskOut(*r[:4], NodeRef(*r[4:6]), NodeRef(*r[6:8]), *r[8:])  # type: ignore[call-arg]


def _task_json(c: Any) -> ColumnElement[str]:
    """SyncTaskOut as JSON (SQLite), from the columns ``c`` of a subquery of ``_SOURCE``."""
    return object_of(
        SyncTaskOut,
        {
            "task_id": c.id,
            "template_id": c.template_id,
            "version": c.version,
            "template_name": c.template_name,
            "source_node": object_of(NodeRef, {"node_id": c.source_node_id, "node_name": c.source_node_name}),
            "target_node": object_of(NodeRef, {"node_id": c.target_node_id, "node_name": c.target_node_name}),
            "storage_name": c.storage_name,
            "status": c.status,
            "progress": c.progress,
            "sync_start_time": utc_text(c.sync_start_time),
            "sync_end_time": utc_text(c.sync_end_time),
            "error_message": c.error_message,
            "bytes_total": c.bytes_total,
            "bytes_done": c.bytes_done,
            "bytes_sent": c.bytes_sent,
            "bytes_reused": c.bytes_reused,
            "rate_bytes_per_sec": c.rate_bytes_per_sec,
            "attempts": c.attempts,
            "vmid": c.vmid,
            "created_at": utc_text(c.created_at),
        },
    )


ONE_ROW = Query(select(*_SOURCE).where(_T.id == bindparam("task_id")))
ONE_JSON = Query(select(_task_json(ONE_ROW.stmt.subquery("t").c)), only="sqlite")


class _Page:
    """The page of one filter and its exact total (from the kept counts; uncorrelated, so
    evaluated once), as rows (each with the total last) and as a JSON array after the total."""

    def __init__(self, by_template: bool, by_status: bool, skips: bool) -> None:
        rows = _page(by_template, by_status, skips)
        total = sync_task_counts.total_select(by_template, by_status).correlate(None).scalar_subquery()
        self.rows = Query(rows.add_columns(total))
        page = rows.subquery("page")
        self.json = Query(select(total, json_list(_task_json(page.c))).select_from(page), only="sqlite")


def _page(by_template: bool, by_status: bool, skips: bool) -> AnySelect:
    """The page's tasks, newest first. ``skips``: for pages after the first, the page's ids
    are found in the index alone and then only their rows are read: skipping an offset's
    rows in the index, not in the table (page 50 of a template's completed tasks on
    MariaDB: 1.0 -> 0.55 ms a statement; on the first page the join costs 0.06 ms more)."""
    page: AnySelect = select(_T.id) if skips else select(*_SOURCE)
    if by_template:
        page = page.where(_T.template_id == bindparam("template_id"))
    if by_status:
        page = page.where(_T.status == bindparam("status"))
    if by_template and by_status:
        # MariaDB 10.11 otherwise intersects the template and status indexes and sorts every
        # match for a page (EXPLAIN: index_merge, filesort); this index gives them in order.
        page = page.with_hint(_T, f"FORCE INDEX ({_TEMPLATE_STATUS_INDEX})", "mysql")
    page = page.order_by(_T.id.desc()).limit(bindparam("limit")).offset(bindparam("offset"))
    if not skips:
        return page
    ids = page.subquery("ids")
    # LIMIT again (the page has no more rows): SQLite keeps a subquery with a LIMIT whole and
    # in its order, where it could flatten a plain join into json_list's aggregate
    return (
        select(*_SOURCE)
        .join_from(ids, _T, _T.id == ids.c.id)
        .order_by(_T.id.desc())
        .limit(bindparam("limit"))
    )


# Rows an index walk may skip for a page and still count as a short read (fast_reads): on
# SQLite about 5.5 us per 100 rows skipped (page 50 of 10: 52 us, page 1: 25 us), so at most
# ~0.08 ms; deeper pages are read on a worker thread.
SHORT_OFFSET = 1000
_PAGES = {(t, s, k): _Page(t, s, k) for t in (False, True) for s in (False, True) for k in (False, True)}
_LIST = msgspec.json.Encoder()


async def one(reads: Reads, task_id: int) -> bytes | None:
    """The task's SyncTaskOut as JSON, or None."""
    if writes_json(reads.dialect):
        (found,) = await reads.fetch((ONE_JSON, {"task_id": task_id}))
        return found[0][0].encode() if found else None
    (found,) = await reads.fetch((ONE_ROW, {"task_id": task_id}))
    return _LIST.encode(_task_out(found[0])) if found else None


async def page(
    reads: Reads, template_id: int | None, status: str | None, page: int, page_size: int
) -> tuple[int, bytes]:
    """The exact total of the filter and one page of it, newest first, as a JSON array."""
    filters = {"template_id": template_id, "status": status}
    params = {k: v for k, v in filters.items() if v is not None}
    key = (template_id is not None, status is not None)
    offset = (page - 1) * page_size
    query, short = _PAGES[(*key, offset > 0)], offset <= SHORT_OFFSET
    paged = {**params, "limit": page_size, "offset": offset}
    if writes_json(reads.dialect):
        ((total, tasks),) = (await reads.fetch((query.json, paged), short=short))[0]
        return int(total), tasks.encode()
    (rows,) = await reads.fetch((query.rows, paged), short=short)
    if rows:
        return int(rows[0][-1]), _LIST.encode([_task_out(r[:-1]) for r in rows])
    # A page past the last (or no task at all) still answers the real total.
    (totals,) = await reads.fetch((sync_task_counts.TOTALS[key], params))
    return int(totals[0][0]), b"[]"
