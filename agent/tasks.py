"""Following PVE tasks (UPIDs): status, and progress from the task log.

PVE has no progress field; qemu-img's progress shows up in the task log as
``transferred 512.0 MiB of 2.0 GiB (25.00%)``, which is what we read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from agent.pve import NodePve, PveCallError

PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)%\)")


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


async def active_task(pve: NodePve, vmid: int, kind: str) -> str | None:
    """The UPID of a running task of ``kind`` on ``vmid`` on this node, if any."""
    tasks = await pve.call("get", f"nodes/{pve.node}/tasks", vmid=vmid, source="active", typefilter=kind)
    for task in tasks:
        if task.get("type") == kind and str(task.get("id")) == str(vmid):
            return str(task["upid"])
    return None


class TaskFailed(Exception):
    pass


async def wait_task(
    pve: NodePve,
    upid: str,
    on_progress: Callable[[float], None] | None = None,
    poll: float = 1.0,
) -> None:
    """Until the task stops; raises TaskFailed with PVE's exit status unless it is OK."""
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
                raise TaskFailed(exit_status or "task failed without an exit status")
            return
        await asyncio.sleep(poll)
