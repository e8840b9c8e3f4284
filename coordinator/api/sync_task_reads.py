"""The sync-task reads of GET /templates/sync-tasks and /templates/sync-tasks/{id}, compiled once.

Each list filter (none, template, status, both) is its own statement, so that every one
is compiled once and read in the order of an index, never sorted (see the indexes of
TemplateSyncTask). A page and its exact total are one statement (one snapshot, one round
trip), the total from the counts the database keeps (coordinator/db/sync_task_counts.py).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from coordinator.db import sync_task_counts
from coordinator.db.fast_reads import Query, Reads, Row
from coordinator.db.models import TemplateSyncTask, VmTemplate

# Declared in coordinator/db/models.py (TemplateSyncTask) for the filtered list.
_TEMPLATE_STATUS_INDEX = "ix_template_sync_task_template_status_id"
_T = TemplateSyncTask
# The name as a subquery per task, not a join: with a join MariaDB starts from the one
# template and sorts all its tasks for a page; this way every plan walks the tasks' index.
_NAME = select(VmTemplate.template_name).where(VmTemplate.id == _T.template_id).scalar_subquery()
# The columns of SyncTaskOut, in the order sync_tasks._row_out takes them.
COLUMNS = (
    _T.id,
    _T.template_id,
    _NAME,
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
    _T.rate_bytes_per_sec,
    _T.attempts,
    _T.vmid,
    _T.created_at,
)

ONE = Query(select(*COLUMNS).where(_T.id == bindparam("task_id")))


def _page(by_template: bool, by_status: bool, skips: bool) -> Query:
    """The page of one filter, with its exact total on every row (from the kept counts;
    evaluated once: it is uncorrelated). ``skips``: for pages after the first, the page's
    ids are found in the index alone and then only their rows are read: skipping an
    offset's rows in the index, not in the table (page 50 of a template's completed tasks
    on MariaDB: 1.0 -> 0.55 ms a statement; on the first page the join costs 0.06 ms more)."""
    page = select(_T.id) if skips else select(*COLUMNS)
    if by_template:
        page = page.where(_T.template_id == bindparam("template_id"))
    if by_status:
        page = page.where(_T.status == bindparam("status"))
    if by_template and by_status:
        # MariaDB 10.11 otherwise intersects the template and status indexes and sorts every
        # match for a page (EXPLAIN: index_merge, filesort); this index gives them in order.
        page = page.with_hint(_T, f"FORCE INDEX ({_TEMPLATE_STATUS_INDEX})", "mysql")
    page = page.order_by(_T.id.desc()).limit(bindparam("limit")).offset(bindparam("offset"))
    total = sync_task_counts.total_select(by_template, by_status).correlate(None).scalar_subquery()
    if not skips:
        return Query(page.add_columns(total))
    ids = page.subquery("page")
    return Query(select(*COLUMNS, total).join_from(ids, _T, _T.id == ids.c.id).order_by(_T.id.desc()))


# Rows an index walk may skip for a page and still count as a short read (fast_reads): on
# SQLite about 5.5 us per 100 rows skipped (page 50 of 10: 52 us, page 1: 25 us), so at most
# ~0.08 ms; deeper pages are read on a worker thread.
SHORT_OFFSET = 1000
_PAGES = {(t, s, k): _page(t, s, k) for t in (False, True) for s in (False, True) for k in (False, True)}


async def one(reads: Reads, task_id: int) -> Row | None:
    rows = (await reads.fetch((ONE, {"task_id": task_id})))[0]
    return rows[0] if rows else None


async def page(
    reads: Reads, template_id: int | None, status: str | None, page: int, page_size: int
) -> tuple[int, list[Row]]:
    """The exact total of the filter and the rows of one page, newest first."""
    filters = {"template_id": template_id, "status": status}
    params = {k: v for k, v in filters.items() if v is not None}
    key = (template_id is not None, status is not None)
    offset = (page - 1) * page_size
    (rows,) = await reads.fetch(
        (_PAGES[(*key, offset > 0)], {**params, "limit": page_size, "offset": offset}),
        short=offset <= SHORT_OFFSET,
    )
    if rows:
        return int(rows[0][-1]), [r[:-1] for r in rows]
    # A page past the last (or no task at all) still answers the real total.
    (totals,) = await reads.fetch((sync_task_counts.TOTALS[key], params))
    return int(totals[0][0]), []
