"""How many sync tasks each template has in each status, kept by the database itself.

``GET /templates/sync-tasks`` answers an exact ``total`` (contract, section 1). Counting
the matching rows on every request grew with the history: at 100k tasks the filtered
list cost 25 ms of CPU per request and served 25-45 req/s (issue 12). Instead, triggers on
``template_sync_task`` keep ``sync_task_count`` (one row per template and status) in step
with every insert, status change and delete, in the same transaction as the write, so
the total is a sum over a few rows whatever the table holds, and no code that writes a
status has to remember it.

Triggers rather than code: status writes happen in several modules (and move into one
per entity later); a trigger cannot be forgotten by any of them, nor by a bulk insert.
SQLite drops a table's triggers with the table, so a migration that recreates
``template_sync_task`` (``batch_alter_table``) must call :func:`create_triggers` again;
tests/coordinator/test_sync_task_counts.py fails on a migrated database without them.

On MariaDB a status change locks the old status's count row, then the new one's, until
commit: concurrent writers of one template's tasks queue there (a few status writes per
sync, so rarely).
"""

from __future__ import annotations

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.fast_reads import Query
from coordinator.db.models import SyncTaskCount

TRIGGERS = ("sync_task_count_insert", "sync_task_count_update", "sync_task_count_delete")

_SQLITE = (
    """CREATE TRIGGER sync_task_count_insert AFTER INSERT ON template_sync_task
BEGIN
    INSERT INTO sync_task_count (template_id, status, tasks) VALUES (NEW.template_id, NEW.status, 1)
    ON CONFLICT (template_id, status) DO UPDATE SET tasks = tasks + 1;
END""",
    """CREATE TRIGGER sync_task_count_update AFTER UPDATE OF template_id, status ON template_sync_task
WHEN NEW.status IS NOT OLD.status OR NEW.template_id IS NOT OLD.template_id
BEGIN
    UPDATE sync_task_count SET tasks = tasks - 1 WHERE template_id = OLD.template_id AND status = OLD.status;
    INSERT INTO sync_task_count (template_id, status, tasks) VALUES (NEW.template_id, NEW.status, 1)
    ON CONFLICT (template_id, status) DO UPDATE SET tasks = tasks + 1;
END""",
    """CREATE TRIGGER sync_task_count_delete AFTER DELETE ON template_sync_task
BEGIN
    UPDATE sync_task_count SET tasks = tasks - 1 WHERE template_id = OLD.template_id AND status = OLD.status;
END""",
)

_MYSQL = (
    """CREATE TRIGGER sync_task_count_insert AFTER INSERT ON template_sync_task FOR EACH ROW
INSERT INTO sync_task_count (template_id, status, tasks) VALUES (NEW.template_id, NEW.status, 1)
ON DUPLICATE KEY UPDATE tasks = tasks + 1""",
    """CREATE TRIGGER sync_task_count_update AFTER UPDATE ON template_sync_task FOR EACH ROW
BEGIN
    IF NOT (NEW.status <=> OLD.status AND NEW.template_id <=> OLD.template_id) THEN
        UPDATE sync_task_count SET tasks = tasks - 1
        WHERE template_id = OLD.template_id AND status = OLD.status;
        INSERT INTO sync_task_count (template_id, status, tasks) VALUES (NEW.template_id, NEW.status, 1)
        ON DUPLICATE KEY UPDATE tasks = tasks + 1;
    END IF;
END""",
    """CREATE TRIGGER sync_task_count_delete AFTER DELETE ON template_sync_task FOR EACH ROW
UPDATE sync_task_count SET tasks = tasks - 1 WHERE template_id = OLD.template_id AND status = OLD.status""",
)

RECOUNT = (
    "INSERT INTO sync_task_count (template_id, status, tasks)"
    " SELECT template_id, status, COUNT(*) FROM template_sync_task GROUP BY template_id, status"
)


def trigger_ddl(dialect: str) -> tuple[str, ...]:
    """The CREATE TRIGGER statements for ``dialect`` ("sqlite" or "mysql", which MariaDB is)."""
    if dialect == "sqlite":
        return _SQLITE
    if dialect in ("mysql", "mariadb"):
        return _MYSQL
    raise ValueError(f"no sync-task count triggers for database {dialect!r}")


def drop_ddl() -> tuple[str, ...]:
    return tuple(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS)


def total_select(by_template: bool, by_status: bool) -> Select[int]:
    stmt = select(func.coalesce(func.sum(SyncTaskCount.tasks), 0))
    if by_template:
        stmt = stmt.where(SyncTaskCount.template_id == bindparam("template_id"))
    if by_status:
        stmt = stmt.where(SyncTaskCount.status == bindparam("status"))
    return stmt


# The total of each filter (by template, by status), for the API's list (fast_reads).
TOTALS = {(t, s): Query(total_select(t, s)) for t in (False, True) for s in (False, True)}


async def total(session: AsyncSession, template_id: int | None = None, status: str | None = None) -> int:
    """How many sync tasks match: of ``template_id`` (any template if None), in ``status`` (any if None)."""
    params = {k: v for k, v in {"template_id": template_id, "status": status}.items() if v is not None}
    stmt = total_select(template_id is not None, status is not None)
    return int(await session.scalar(stmt, params) or 0)
