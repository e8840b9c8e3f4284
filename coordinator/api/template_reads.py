"""The template reads of GET /templates, compiled once (coordinator/db/fast_reads.py).

A visible template (active or deleting) with its cluster's name and its unfinished cascade
delete, if any, as columns; each filter (cluster, name) is its own statement. The total
counts the matching templates (it grows with the templates, not with the history).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, bindparam, func, or_, select

from coordinator.db.fast_reads import AnySelect, Query, Reads
from coordinator.db.models import PveCluster, TemplateDeletion, VmTemplate
from coordinator.states.deletion import UNFINISHED

_V, _D = VmTemplate, TemplateDeletion


class TemplateRow(NamedTuple):
    id: int
    template_name: str
    cluster_id: int
    cluster_name: str
    description: str
    status: str
    created_at: datetime
    updated_at: datetime
    creator: str
    modifier: str
    deletion: DeletionRow | None


class DeletionRow(NamedTuple):
    """What templates.deletion_out reads of a TemplateDeletion."""

    status: str
    started_at: datetime
    reason: str | None
    remaining: str
    attempts: int
    next_attempt_at: datetime | None


_COLUMNS = (
    _V.id,
    _V.template_name,
    _V.cluster_id,
    PveCluster.cluster_name,
    _V.description,
    _V.status,
    _V.created_at,
    _V.updated_at,
    _V.creator,
    _V.modifier,
    _D.status,
    _D.started_at,
    _D.reason,
    _D.remaining,
    _D.attempts,
    _D.next_attempt_at,
)
_TEMPLATE_COLUMNS = 10


def _live(stmt: AnySelect, by_cluster: bool, by_name: bool) -> AnySelect:
    stmt = (
        stmt.join(PveCluster, PveCluster.id == _V.cluster_id)
        .outerjoin(_D, and_(_D.template_id == _V.id, or_(*(_D.status == s for s in UNFINISHED))))
        .where(_V.status != "deleted")
    )
    if by_cluster:
        stmt = stmt.where(_V.cluster_id == bindparam("cluster_id"))
    if by_name:
        stmt = stmt.where(_V.template_name.like(bindparam("name_like"), escape="\\"))
    return stmt


def _queries(by_cluster: bool, by_name: bool) -> tuple[Query, Query]:
    """The count alone, and a page with the count on every row (one statement: one snapshot)."""
    count = _live(select(func.count()).select_from(_V), by_cluster, by_name)
    rows = _live(select(count.correlate(None).scalar_subquery(), *_COLUMNS), by_cluster, by_name).order_by(
        _V.id.desc()
    )
    return Query(count), Query(rows.limit(bindparam("limit")).offset(bindparam("offset")))


_PAGES = {(c, n): _queries(c, n) for c in (False, True) for n in (False, True)}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def page(
    reads: Reads, cluster_id: int | None, name: str | None, page: int, page_size: int
) -> tuple[int, list[TemplateRow]]:
    """The number of matching live templates and one page of them, newest first."""
    params: dict[str, object] = {"limit": page_size, "offset": (page - 1) * page_size}
    if cluster_id is not None:
        params["cluster_id"] = cluster_id
    if name:
        params["name_like"] = f"%{_escape_like(name)}%"
    count, rows = _PAGES[(cluster_id is not None, bool(name))]
    # Templates are few (one per image): a page is short whatever its offset.
    (found,) = await reads.fetch((rows, params))
    if found:
        return int(found[0][0]), [_row(r[1:]) for r in found]
    (totals,) = await reads.fetch((count, params))  # a page past the last: the real total
    return int(totals[0][0]), []


def _row(r: tuple[object, ...]) -> TemplateRow:
    deletion = DeletionRow._make(r[_TEMPLATE_COLUMNS:]) if r[_TEMPLATE_COLUMNS] is not None else None
    return TemplateRow._make((*r[:_TEMPLATE_COLUMNS], deletion))
