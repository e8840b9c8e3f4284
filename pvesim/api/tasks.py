"""Task endpoints (pve-manager API2/Tasks.pm)."""

from __future__ import annotations

import re
from typing import Any

from pvesim.api import Request, as_bool, route
from pvesim.errors import param_error
from pvesim.tasks import decode_upid, normalize_status_type, split_token_user
from shared.pve_formats import split_list


class Download:
    """A task log to send as a file (GET .../log?download=1)."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename


def _task_user_ok(req: Request, task: dict[str, Any]) -> bool:
    """check_task_user: a token only sees its own tasks, a user its own and its tokens'."""
    if task.get("tokenid"):
        return req.user in (f"{task['user']}!{task['tokenid']}", task["user"])
    return req.user == task["user"]


def _decode(req: Request, params: dict[str, str]) -> dict[str, Any]:
    task = decode_upid(params["upid"])
    if task is None:
        raise param_error({"upid": "unable to parse worker upid"})
    # each node only has its own task logs
    if task["node"] != params["node"] or not req.tasks.exists(params["upid"]):
        raise param_error({"upid": "no such task"})
    return split_token_user(task)


@route("GET", "/nodes/{node}/tasks")
async def node_tasks(req: Request, params: dict[str, str]) -> Any:
    node = params["node"]
    start = int(params.get("start", 0))
    limit = int(params.get("limit", 50))
    userfilter = params.get("userfilter")
    typefilter = params.get("typefilter")
    errors = as_bool(params.get("errors"))
    source = params.get("source", "archive")
    since = int(params["since"]) if params.get("since") else None
    until = int(params["until"]) if params.get("until") else None
    statusfilter = dict.fromkeys(("ok", "warning", "error", "unknown"), True)
    if params.get("statusfilter") is not None and not errors:
        statusfilter = dict.fromkeys(statusfilter, False)
        for item in split_list(params["statusfilter"]):
            statusfilter[item.lower()] = True
    elif errors:
        statusfilter["ok"] = False
    auditor = req.can(f"/nodes/{node}", ["Sys.Audit"])
    count = 0
    res: list[dict[str, Any]] = []

    def filtered(task: dict[str, Any]) -> bool:
        nonlocal count
        if userfilter and not re.search(re.escape(userfilter), task["user"], re.I):
            return True
        if not (auditor or _task_user_ok(req, task)):
            return True
        if typefilter and task["type"] != typefilter:
            return True
        if params.get("vmid") and task.get("id") != params["vmid"]:
            return True
        if since is not None and task["starttime"] < since:
            return True
        if until is not None and task["starttime"] > until:
            return True
        if not statusfilter.get(normalize_status_type(task.get("status")), False):
            return True
        count += 1
        if count - 1 < start:
            return True
        return len(res) >= limit

    if source in ("active", "all"):
        for task in req.tasks.active_entries(node):
            task = split_token_user(task)
            if not filtered(task):
                task["status"] = "RUNNING"
                res.append(task)
    if source != "active":
        for task in req.tasks.archive_entries(node):
            task = split_token_user(task)
            if not filtered(task):
                res.append(task)
    req.total = count
    return res


@route("GET", "/nodes/{node}/tasks/{upid}")
async def upid_index(req: Request, params: dict[str, str]) -> Any:
    return [{"name": "log"}, {"name": "status"}]


@route("DELETE", "/nodes/{node}/tasks/{upid}")
async def stop_task(req: Request, params: dict[str, str]) -> Any:
    task = _decode(req, params)
    if not _task_user_ok(req, task):
        req.check(f"/nodes/{params['node']}", ["Sys.Modify"])
    req.tasks.stop(params["upid"])
    return None


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def read_task_log(req: Request, params: dict[str, str]) -> Any:
    task = _decode(req, params)
    if not _task_user_ok(req, task):
        req.check(f"/nodes/{params['node']}", ["Sys.Audit"])
    lines = req.tasks.read_log(params["upid"])
    if as_bool(params.get("download")):
        if params.get("start") is not None or params.get("limit") is not None:
            from pvesim.errors import die

            raise die("'download' cannot be used together with 'start' or 'limit' parameters")
        import time

        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(task["starttime"]))
        name = f"task-{task['node']}-{task['type']}-{stamp}.log"
        return Download("".join(line + "\n" for line in lines), name)
    start = int(params.get("start", 0))
    limit = int(params.get("limit", 50))
    out: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if n <= start:
            continue
        if limit and len(out) >= limit:
            continue
        out.append({"n": n, "t": line})
    count = len(lines)
    if not count:
        # pve-common dump_logfile: ExtJS does not like an empty list
        count = 1
        out.append({"n": 1, "t": "no content"})
    req.total = count
    return out


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def read_task_status(req: Request, params: dict[str, str]) -> Any:
    task = _decode(req, params)
    if not _task_user_ok(req, task):
        req.check(f"/nodes/{params['node']}", ["Sys.Audit"])
    upid = params["upid"]
    task["upid"] = upid
    if req.tasks.is_running(upid):
        task["status"] = "running"
    else:
        task["status"] = "stopped"
        task["exitstatus"] = req.tasks.status_of(upid)
    return task
