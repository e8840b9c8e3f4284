"""`tasks list|watch|retry|cancel`: the sync tasks that copy a template between nodes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from client import text
from client.commands.common import Commands, node, paging, show_page
from client.exit_codes import Exit, UsageError
from client.lookup import every
from client.output import Output
from client.work import FINAL, Item, Work

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api

STATUSES = ("pending", "syncing", "importing", "completed", "failed", "canceled")
ACTIVE = ("pending", "syncing", "importing")


def add(commands: Commands) -> None:
    tasks = commands.group("tasks", "list, watch, retry or cancel sync tasks")
    p = tasks.command("list", "sync tasks, newest first", list_tasks)
    p.add_argument("--template", type=int, metavar="TEMPLATE_ID", help="only this template's")
    p.add_argument("--status", choices=STATUSES, help="only tasks in this state")
    paging(p)
    p = tasks.command(
        "watch", "one bar per task until each ends (exit 1 if one did not complete)", watch_tasks
    )
    p.add_argument("tasks", type=int, nargs="*", metavar="TASK_ID")
    p.add_argument("--template", type=int, metavar="TEMPLATE_ID", help="every active task of this template")
    for action, what in (
        ("retry", "try a failed or canceled task again (the copy resumes)"),
        ("cancel", "stop a task"),
    ):
        p = tasks.command(action, what, change_task)
        p.add_argument("task", type=int, metavar="TASK_ID")
        p.set_defaults(change=action)


COLUMNS = text.columns(
    "ID=task_id TEMPLATE=template VERSION=version FROM=source TO=target STATUS=status PROGRESS=progress "
    "BYTES=bytes ERROR=error_message",
    template=lambda t: f"{t['template_id']} {t['template_name']}",
    source=lambda t: node(t["source_node"]),
    target=lambda t: node(t["target_node"]),
    progress=lambda t: f"{t['progress']}%",
    bytes=lambda t: f"{text.size(t['bytes_done'])} of {text.size(t['bytes_total'])}",
)


async def list_tasks(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    await show_page(
        api, out, "/templates/sync-tasks", args, COLUMNS, template_id=args.template, status=args.status
    )
    return Exit.OK


def _item(task: Mapping[str, Any]) -> Item:
    item = Item("sync_task", task["task_id"], f"{node(task['target_node'])} sync #{task['task_id']}")
    Work([item]).apply({"kind": "sync_task", "id": task["task_id"], **task})
    return item


async def watch_tasks(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    if not args.tasks and args.template is None:
        raise WatchUsage("name the tasks to watch (TASK_ID ...) or --template TEMPLATE_ID")
    if args.tasks:
        found = [await api.get(f"/templates/sync-tasks/{t}") for t in args.tasks]
    else:
        found = [
            t
            for status in ACTIVE
            for t in await every(api, "/templates/sync-tasks", template_id=args.template, status=status)
        ]
    if not found:
        out.note(f"template {args.template} has no active sync task")
        out.result([], lambda _: [])
        return Exit.OK
    return await follow_tasks(api, out, found, args.template)


async def follow_tasks(api: Api, out: Output, found: list[dict[str, Any]], template: int | None) -> Exit:
    """A bar per task until each ends; then the tasks as the API has them (a table, or with
    --json the list of the API's task objects). Exit 1 unless every one completed."""
    work = Work([_item(t) for t in found])
    ids = [t["task_id"] for t in found]

    async def snapshot() -> list[Mapping[str, Any]]:
        now = [await api.get(f"/templates/sync-tasks/{t}") for t in ids]
        return [{"kind": "sync_task", "id": t["task_id"], **t} for t in now]

    filters = {"kind": "sync_task", "task_id": ids[0] if len(ids) == 1 else None, "template_id": template}
    from client.follow import watch  # rich and the events stream: only when waiting

    await watch(api, out, work, snapshot, filters)
    final = [await api.get(f"/templates/sync-tasks/{t}") for t in ids]
    out.result(final, lambda d: text.table(d, COLUMNS))
    return Exit.OK if all(t["status"] == "completed" for t in final) else Exit.WORK_FAILED


class WatchUsage(UsageError):
    """`tasks watch` without anything to watch."""


async def change_task(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.call("POST", f"/templates/sync-tasks/{args.task}/{args.change}")
    out.result(data, lambda d: [f"sync task {d['task_id']}: {d['status']}"])
    return Exit.OK


assert set(FINAL["sync_task"]) | set(ACTIVE) == set(STATUSES)
