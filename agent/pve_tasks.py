"""Running and following PVE tasks (UPIDs): status, progress from the task log, limits.

PVE has no progress field; qemu-img's progress shows up in the task log as
``transferred 512.0 MiB of 2.0 GiB (25.00%)``, which is what we read.

Every wait on a task has a limit (``TaskLimit``): a deadline, and a cancel for a job
that is no longer wanted. A wait that reaches its limit ends with ``WaitEnded``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from agent.errors import AgentFault
from agent.pve import NodePve, PveCallError
from shared.deadlines import Deadline
from shared.pve_outage import NO_SPACE

log = logging.getLogger(__name__)
PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)%\)")
POLL_SECONDS = 1.0
# (kind, vmid, node, first log line or None) of the task a foreground call runs: how to find
# it in PVE's task list. The first line tells apart tasks of one kind on one VM at once (PVE
# names clone tasks after the source: two clones of one template run side by side).
TaskKey = tuple[str, int, str, str | None]
# After asking PVE to stop a task, how long its foreground pvesh may take to return.
STOP_GRACE = 30.0


def progress_from_log(lines: list[dict[str, Any]]) -> float | None:
    """The last percentage in the log, or None."""
    for entry in reversed(lines):
        match = PROGRESS.search(str(entry.get("t", "")))
        if match:
            return float(match.group(1))
    return None


async def task_status(pve: NodePve, upid: str) -> dict[str, Any]:
    node = upid.split(":")[1]
    result: dict[str, Any] = await pve.call("get", f"nodes/{node}/tasks/{upid}/status")
    return result


class LogFollower:
    """Reads a task log incrementally (PVE's log endpoint pages by line number)."""

    def __init__(self, pve: NodePve, upid: str) -> None:
        self.pve = pve
        self.upid = upid
        self.node = upid.split(":")[1]
        self.next_line = 0

    async def new_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = await self.pve.call(
            "get", f"nodes/{self.node}/tasks/{self.upid}/log", start=self.next_line, limit=500
        )
        # PVE answers an empty log with a placeholder line {"n": 1, "t": "no content"}.
        lines = [
            entry
            for entry in lines
            if int(entry.get("n", 0)) > self.next_line
            and not (entry.get("n") == 1 and entry.get("t") == "no content")
        ]
        if lines:
            self.next_line = max(int(entry["n"]) for entry in lines)
        return lines


async def active_task(pve: NodePve, vmid: int | None, kind: str, node: str | None = None) -> str | None:
    """The UPID of a running task of ``kind`` on ``vmid`` (None: on any VM) on ``node``
    (this node by default), if any."""
    filters: dict[str, Any] = {"vmid": vmid} if vmid is not None else {}
    tasks = await pve.call(
        "get", f"nodes/{node or pve.node}/tasks", source="active", typefilter=kind, **filters
    )
    for task in tasks:
        if task.get("type") == kind and (vmid is None or str(task.get("id")) == str(vmid)):
            return str(task["upid"])
    return None


async def find_task(pve: NodePve, task: TaskKey) -> str | None:
    """The UPID of the running task ``task`` describes, if PVE lists it yet."""
    kind, vmid, node, first_line = task
    if first_line is None:
        return await active_task(pve, vmid, kind, node)
    tasks = await pve.call("get", f"nodes/{node}/tasks", vmid=vmid, source="active", typefilter=kind)
    for found in tasks:
        if found.get("type") != kind or str(found.get("id")) != str(vmid):
            continue
        upid = str(found["upid"])
        lines = await pve.call("get", f"nodes/{node}/tasks/{upid}/log", start=0, limit=1)
        if lines and lines[0].get("t") == first_line:
            return upid
    return None


class TaskFailed(AgentFault):
    """A PVE task ended without OK (the message is its exit status), or could not be waited on."""

    def __init__(self, message: str, upid: str | None = None) -> None:
        super().__init__(message)
        self.upid = upid


async def task_log_lines(pve: NodePve, upid: str, limit: int = 5000) -> list[str]:
    """A task's log as text lines (for a failed task: its exit status rarely says why, e.g.
    qemu-img's "No space left on device" is only in the log)."""
    entries = await pve.call("get", f"nodes/{upid.split(':')[1]}/tasks/{upid}/log", start=0, limit=limit)
    return [str(entry.get("t", "")) for entry in entries]


class WaitEnded(TaskFailed):
    """The wait on a task reached its limit (the message says which) before the task ended.
    ``stopped``: whether the task ended when asked to stop (or was not to be stopped)."""

    def __init__(self, message: str, upid: str | None = None, stopped: bool = True) -> None:
        super().__init__(message, upid)
        self.stopped = stopped


class TaskLimit:
    """How long one job may wait on PVE tasks, and whether it was canceled meanwhile."""

    def __init__(self, seconds: float) -> None:
        self.deadline = Deadline(seconds)
        self.canceled: str | None = None

    def cancel(self, reason: str) -> None:
        if self.canceled is None:
            self.canceled = reason

    def reached(self) -> str | None:
        """Why waits must end now, or None."""
        if self.canceled is not None:
            return f"canceled: {self.canceled}"
        if self.deadline.passed():
            return self.deadline.missed()
        return None

    def check(self) -> None:
        reason = self.reached()
        if reason is not None:
            raise WaitEnded(reason)


async def stop_task(pve: NodePve, upid: str) -> bool:
    """Ask PVE to stop a task (what the GUI's Stop button does); a finished task is left be.
    False if PVE would not take the request."""
    node = upid.split(":")[1]
    try:
        await pve.call("delete", f"nodes/{node}/tasks/{upid}")
        log.info("stopped PVE task %s", upid)
        return True
    except PveCallError as exc:
        log.warning("stopping PVE task %s: %s", upid, exc)
        return False


async def run_task(
    pve: NodePve,
    limit: TaskLimit,
    kind: str,
    vmid: int,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    on_progress: Callable[[float], None] | None = None,
    stop_when_late: bool = True,
    node: str | None = None,
    first_line: str | None = None,
) -> None:
    """Start the PVE task of ``kind`` on ``vmid`` (``method path params``; the task runs on
    ``node``, this node by default) and wait until it ends, within ``limit``. ``first_line``:
    the line PVE's task log starts with, where other tasks of that kind and VM may run too.

    Raises PveCallError if it does not start, TaskFailed with PVE's exit status unless it
    ends OK, WaitEnded when the limit is reached first; the task is then stopped unless
    ``stop_when_late`` is off (stopping a half-done destroy would leave a broken VM).
    """
    limit.check()
    # pvesh runs the task in the foreground; follow its log meanwhile.
    call = asyncio.create_task(
        pve.call_for_task(limit.deadline.remaining() + STOP_GRACE, method, path, **(params or {}))
    )
    await _follow_foreground(
        pve, limit, call, (kind, vmid, node or pve.node, first_line), on_progress, stop_when_late
    )
    upid = str(call.result())
    try:
        await wait_task(pve, upid, limit, on_progress)
    except WaitEnded as exc:
        if stop_when_late:
            exc.stopped = await stop_task(pve, upid)
        raise


async def _follow_foreground(
    pve: NodePve,
    limit: TaskLimit,
    call: asyncio.Task[Any],
    task: TaskKey,
    on_progress: Callable[[float], None] | None,
    stop_when_late: bool,
) -> None:
    """Until the foreground ``call`` returns, reporting the task's progress from its log;
    WaitEnded when ``limit`` is reached first (the task stopped unless ``stop_when_late`` is off)."""
    follower: LogFollower | None = None
    while not call.done():
        await asyncio.wait({call}, timeout=POLL_SECONDS)
        if call.done():
            break
        follower = await _report_progress(pve, follower, task, on_progress)
        reason = limit.reached()
        if reason is not None:
            stopped = True
            if stop_when_late:
                stopped = await _stop_foreground(pve, call, follower.upid if follower else None, task)
            else:
                _forget(call)
            raise WaitEnded(reason, stopped=stopped)


async def _report_progress(
    pve: NodePve,
    follower: LogFollower | None,
    task: TaskKey,
    on_progress: Callable[[float], None] | None,
) -> LogFollower | None:
    """The running task's log follower (found once PVE lists the task), after passing on the
    progress its new log lines show."""
    try:
        if follower is None:
            running = await find_task(pve, task)
            follower = LogFollower(pve, running) if running else None
        if follower is not None and on_progress is not None:
            pct = progress_from_log(await follower.new_lines())
            if pct is not None:
                on_progress(pct)
    except PveCallError:
        pass  # progress is best effort; the task itself decides success
    return follower


async def _stop_foreground(pve: NodePve, call: asyncio.Task[Any], upid: str | None, task: TaskKey) -> bool:
    """Stop the task a foreground call runs, and give the call STOP_GRACE to return; whether
    it did."""
    grace = Deadline(STOP_GRACE)
    stopped = False
    while not call.done() and not grace.passed():
        if upid is None:
            try:
                upid = await find_task(pve, task)
            except PveCallError:
                pass
        if upid is not None and not stopped:
            await stop_task(pve, upid)
            stopped = True
        await asyncio.wait({call}, timeout=POLL_SECONDS)
    ended = call.done()
    if not ended:
        log.warning("the %s task of VM %s was not stopped within %.0f s", task[0], task[1], STOP_GRACE)
    _forget(call)
    return ended


def _forget(call: asyncio.Task[Any]) -> None:
    """Nobody waits for this call's answer any more (its failure is the stop we asked for)."""
    call.add_done_callback(lambda done: done.cancelled() or done.exception())


async def wait_task(
    pve: NodePve,
    upid: str,
    limit: TaskLimit,
    on_progress: Callable[[float], None] | None = None,
    poll: float = POLL_SECONDS,
) -> None:
    """Until the task stops; raises TaskFailed with PVE's exit status unless it is OK, and
    WaitEnded when ``limit`` is reached first (the task itself is left alone)."""
    follower = LogFollower(pve, upid)
    while True:
        status = await task_status(pve, upid)
        if on_progress is not None:
            try:
                pct = progress_from_log(await follower.new_lines())
            except PveCallError:
                pct = None
            if pct is not None:
                on_progress(pct)
        if status.get("status") == "stopped":
            exit_status = str(status.get("exitstatus", ""))
            if exit_status != "OK" and not exit_status.startswith("WARNINGS"):
                raise TaskFailed(exit_status or "task failed without an exit status", upid)
            return
        limit.check()
        await asyncio.sleep(poll)


async def storage_full(pve: NodePve, exc: TaskFailed, storage: str) -> str | None:
    """'storage local-lvm on pve-node2 is full: ...' when the failed task's log says the
    storage ran out of space (the exit status only says qemu-img failed)."""
    lines = [str(exc)]
    if exc.upid is not None:
        try:
            lines = await task_log_lines(pve, exc.upid) + lines
        except PveCallError:
            pass
    for line in lines:
        if NO_SPACE.search(line):
            return f"storage {storage} on {pve.node} is full: {line.strip()}"
    return None
