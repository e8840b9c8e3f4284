"""Worker tasks: UPIDs, task logs, the task index and the active list (per node).

Layout per node, as PVE's /var/log/pve/tasks: `nodes/<node>/tasks/<X>/<UPID>` holds the log
(X = last hex digit of the start time), `index` one line per finished task
("UPID ENDTIME STATUS"), `active` the UPIDs still running. A task still listed as active
when the emulator starts again died with the emulator: its log has no final TASK line, so
its status reads "unexpected status", as on a PVE node that lost a worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvesim.errors import ApiError

log = logging.getLogger("pvesim.tasks")

UPID_RE = re.compile(
    r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):"
)
MAX_FINISHED = 25  # RESTEnvironment active_workers: finished tasks kept in the broadcast list


def encode_upid(node: str, pid: int, pstart: int, starttime: int, typ: str, ident: str, user: str) -> str:
    """pve-common UPID.pm encode."""
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{typ}:{ident}:{user}:"


def decode_upid(upid: str) -> dict[str, Any] | None:
    m = UPID_RE.fullmatch(upid)
    if not m:
        return None
    return {
        "node": m.group(1),
        "pid": int(m.group(3), 16),
        "pstart": int(m.group(4), 16),
        "starttime": int(m.group(5), 16),
        "type": m.group(6),
        "id": m.group(7),
        "user": m.group(8),
    }


def split_token_user(task: dict[str, Any]) -> dict[str, Any]:
    """API2/Tasks.pm convert_token_task: 'user@realm!token' -> user + tokenid."""
    m = re.fullmatch(r"([^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+)!([A-Za-z][A-Za-z0-9.\-_]+)", task["user"])
    if m:
        task["user"], task["tokenid"] = m.group(1), m.group(2)
    return task


def read_status(lines: list[str]) -> str:
    """UPID.pm read_status: the verdict in a task log's last line."""
    last = lines[-1] if lines else ""
    if last == "TASK OK":
        return "OK"
    if last.startswith("TASK ERROR: ") and len(last) > 12:
        return last[12:]
    m = re.fullmatch(r"TASK (WARNINGS: \d+)", last)
    if m:
        return m.group(1)
    return "unexpected status"


def normalize_status_type(status: str | None) -> str:
    if not status:
        return "unknown"
    if status == "OK":
        return "ok"
    if re.fullmatch(r"WARNINGS: \d+", status):
        return "warning"
    if status == "unexpected status":
        return "unknown"
    return "error"


def read_proc_uptime_ticks() -> int:
    """Now, in clock ticks since boot: what a new process's start time (pstart) is."""
    try:
        with open("/proc/uptime") as fh:
            return int(float(fh.read().split()[0]) * os.sysconf("SC_CLK_TCK"))
    except OSError:
        return int(time.monotonic() * 100)


class WorkerCrashed(Exception):
    """The worker process died without a word (killed): what it did so far stays as it is,
    and its task ends with no verdict ("unexpected status", as PVE reports a dead worker)."""


class TaskContext:
    """What a worker uses to write to its task log."""

    def __init__(self, task: Task) -> None:
        self._task = task
        self.warnings = 0

    @property
    def upid(self) -> str:
        return self._task.upid

    @property
    def node(self) -> str:
        return self._task.node

    def log(self, line: str) -> None:
        self._task.append(line)

    def warn(self, message: str) -> None:
        """RESTEnvironment::warn / log_warn: counted, ends the task with WARNINGS."""
        self.warnings += 1
        self._task.append(f"WARN: {message.rstrip()}")


Worker = Callable[[TaskContext], Awaitable[None]]


@dataclass
class Task:
    upid: str
    node: str
    info: dict[str, Any]
    log_path: Path
    cli: bool
    lines: list[str] = field(default_factory=list)
    endtime: int | None = None
    status: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None

    def append(self, line: str) -> None:
        for part in line.split("\n"):
            self.lines.append(part)
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(part + "\n")
        self.changed.set()
        self.changed = asyncio.Event()


class TaskManager:
    def __init__(self, state_dir: Path, nodes: list[str]) -> None:
        self.state_dir = state_dir
        self.running: dict[str, Task] = {}
        self.finished: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
        self.stopping = False
        # worker PIDs: unique, plausible numbers (no real process backs a worker)
        self._pids = itertools.count(os.getpid() * 7 % 3_000_000 + 100_000)
        # hook to fail/delay workers on demand (fault injection), set by the server
        self.before_worker: Callable[[str, str, str], Awaitable[None]] | None = None
        for node in nodes:
            self._recover(node)

    # -- files ----------------------------------------------------------------------------------

    def tasks_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node / "tasks"

    def log_path(self, upid: str) -> Path:
        info = decode_upid(upid)
        if info is None:
            raise ValueError(upid)
        starthex = upid.split(":")[5]
        return self.tasks_dir(info["node"]) / starthex[7:8] / upid

    def _write_active(self, node: str) -> None:
        active = [t.upid for t in self.running.values() if t.node == node]
        path = self.tasks_dir(node) / "active"
        path.write_text(json.dumps(active))

    def _recover(self, node: str) -> None:
        """Load the index; tasks left active by a previous run died with it."""
        tdir = self.tasks_dir(node)
        tdir.mkdir(parents=True, exist_ok=True)
        index = tdir / "index"
        entries: list[dict[str, Any]] = []
        if index.exists():
            for line in index.read_text().splitlines():
                m = re.fullmatch(r"(\S+)(?: ([0-9A-Za-z]{8})(?: (\S.*))?)?", line)
                if not m:
                    continue
                info = decode_upid(m.group(1))
                if info is None:
                    continue
                info["upid"] = m.group(1)
                if m.group(2):
                    info["endtime"] = int(m.group(2), 16)
                if m.group(3):
                    info["status"] = m.group(3)
                entries.append(info)
        active = tdir / "active"
        if active.exists():
            now = int(time.time())
            for upid in json.loads(active.read_text() or "[]"):
                info = decode_upid(upid)
                if info is None:
                    continue
                try:
                    lines = self.log_path(upid).read_text().splitlines()
                except OSError:
                    lines = []
                info.update(upid=upid, endtime=now, status=read_status(lines))
                entries.append(info)
                with open(index, "a") as fh:
                    fh.write(f"{upid} {now:08X} {info['status']}\n")
            active.write_text("[]")
        self.finished[node] = entries

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, node: str, typ: str, ident: str, user: str, worker: Worker, cli: bool = False) -> str:
        """fork_worker: create the task, run `worker` in the background, return the UPID.

        `cli` marks tasks of the pvesh shim (PVE runs those in the foreground; the log then
        gets the extra newline before "TASK ERROR" that RESTEnvironment's tee writes)."""
        starttime = int(time.time())
        upid = encode_upid(
            node,
            next(self._pids) % 4_194_304,
            read_proc_uptime_ticks(),
            starttime,
            typ,
            ident,
            user,
        )
        path = self.log_path(upid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        info = decode_upid(upid)
        assert info
        task = Task(upid=upid, node=node, info=info, log_path=path, cli=cli)
        self.running[upid] = task
        self._write_active(node)
        log.info("starting task %s", upid)
        task.runner = asyncio.get_running_loop().create_task(self._run(task, worker))
        return upid

    async def _run(self, task: Task, worker: Worker) -> None:
        ctx = TaskContext(task)
        error: str | None = None
        try:
            if self.before_worker:
                await self.before_worker(task.info["type"], task.info["id"], task.node)
            await worker(ctx)
        except WorkerCrashed as exc:
            log.info("task %s crashed (injected): %s", task.upid, exc)
            self._finish(task)
            return
        except asyncio.CancelledError:
            if self.stopping:
                # the emulator goes down: the task dies without a verdict, like a node
                # losing power (reported as "unexpected status" after the restart)
                self.running.pop(task.upid, None)
                raise
            error = "received interrupt"
        except ApiError as exc:
            error = exc.stringify()  # how Perl prints the exception object
        except Exception as exc:  # noqa: BLE001 - any failure ends the task with its text
            log.exception("task %s crashed", task.upid)
            error = str(exc) or exc.__class__.__name__
        if error is not None:
            text = error.rstrip("\n").replace("\n", " ")
            if task.cli:
                task.append("")
            task.append(f"TASK ERROR: {text}")
        elif ctx.warnings:
            if task.cli:
                task.append("")
            task.append(f"TASK WARNINGS: {ctx.warnings}")
        else:
            task.append("TASK OK")
        self._finish(task)

    def _finish(self, task: Task) -> None:
        task.endtime = int(time.time())
        task.status = read_status(task.lines)
        entry = dict(task.info, upid=task.upid, endtime=task.endtime, status=task.status)
        self.finished.setdefault(task.node, []).append(entry)
        with open(self.tasks_dir(task.node) / "index", "a") as fh:
            fh.write(f"{task.upid} {task.endtime:08X} {task.status}\n")
        self.running.pop(task.upid, None)
        self._write_active(task.node)
        task.changed.set()
        log.info("end task %s %s", task.upid, task.status)

    def stop(self, upid: str) -> None:
        """DELETE /nodes/{node}/tasks/{upid}: interrupt a running worker."""
        task = self.running.get(upid)
        if task and task.runner and not task.runner.done():
            task.runner.cancel()

    async def shutdown(self) -> None:
        self.stopping = True
        runners = [t.runner for t in self.running.values() if t.runner]
        for r in runners:
            r.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    async def wait(self, upid: str, timeout: float | None = None) -> None:
        task = self.running.get(upid)
        if task and task.runner:
            await asyncio.wait_for(asyncio.shield(task.runner), timeout)

    # -- queries --------------------------------------------------------------------------------

    def exists(self, upid: str) -> bool:
        try:
            return self.log_path(upid).exists()
        except ValueError:
            return False

    def is_running(self, upid: str) -> bool:
        return upid in self.running

    def read_log(self, upid: str) -> list[str]:
        task = self.running.get(upid)
        if task:
            return list(task.lines)
        return self.log_path(upid).read_text(encoding="utf-8", errors="replace").splitlines()

    def status_of(self, upid: str) -> str:
        return read_status(self.read_log(upid))

    def active_entries(self, node: str) -> list[dict[str, Any]]:
        return [dict(t.info, upid=t.upid) for t in self.running.values() if t.node == node]

    def archive_entries(self, node: str) -> list[dict[str, Any]]:
        """Finished tasks, newest first (the index read backwards)."""
        return [dict(e) for e in reversed(self.finished.get(node, []))]

    def cluster_list(self, node: str) -> list[dict[str, Any]]:
        """The node's broadcast task list: running tasks plus the most recent finished."""
        out = []
        for t in self.running.values():
            if t.node == node:
                entry = {k: v for k, v in t.info.items() if k != "pstart"}
                out.append(dict(entry, upid=t.upid))
        done = sorted(self.finished.get(node, []), key=lambda e: -e["starttime"])
        for e in done[: max(0, MAX_FINISHED - len(out))]:
            entry = {k: v for k, v in e.items() if k not in ("pid", "pstart")}
            entry["saved"] = "1"
            out.append(entry)
        return out
