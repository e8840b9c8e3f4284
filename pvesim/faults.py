"""Fault injection for tests: make matching API calls or worker tasks fail (or slow down).

Faults are kept in memory only; they are set through the control API (see control.py and
README.md).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass
from typing import Any

from pvesim.errors import ApiError, die
from pvesim.tasks import WorkerCrashed


@dataclass
class Fault:
    id: int
    kind: str  # "http" or "task"
    method: str  # HTTP method or "*"
    path: re.Pattern[str] | None  # searched in the API path, e.g. "/nodes/pve-node1/qemu"
    task_type: str | None  # worker type, e.g. "qmcreate"
    task_id: re.Pattern[str] | None  # worker id (the VMID for VM tasks)
    status: int
    message: str
    errors: dict[str, str] | None
    delay: float
    # task faults: after the delay the worker dies as a killed process does (OOM kill, power
    # loss): no clean-up, no verdict. A create leaves its config at `lock: create`.
    crash: bool
    times: int | None  # None: until cleared
    # http faults: answer 200 with this JSON body instead of doing the call (a PVE, or a proxy
    # in front of it, that says something a client does not expect: e.g. {} without "data")
    answer: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "type": self.task_type,
            "task_id": self.task_id.pattern if self.task_id else None,
            "status": self.status,
            "message": self.message,
            "errors": self.errors,
            "delay": self.delay,
            "crash": self.crash,
            "times": self.times,
            "answer": self.answer,
        }


class FaultRegistry:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        kind = str(spec.get("kind", "task" if "type" in spec else "http"))
        if kind not in ("http", "task"):
            raise ValueError("kind must be 'http' or 'task'")
        times = spec.get("times", 1)
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            method=str(spec.get("method", "*")).upper(),
            path=re.compile(spec["path"]) if spec.get("path") else None,
            task_type=spec.get("type"),
            task_id=re.compile(str(spec["task_id"])) if spec.get("task_id") else None,
            status=int(spec.get("status", 500)),
            message=str(spec.get("message", "")),
            errors=spec.get("errors"),
            delay=float(spec.get("delay", 0)),
            crash=bool(spec.get("crash", False)),
            times=None if times in (None, 0) else int(times),
            answer=spec.get("answer"),
        )
        if fault.answer is not None and (kind != "http" or not isinstance(fault.answer, dict)):
            raise ValueError("'answer' is a JSON object an http fault answers with (status 200)")
        if kind == "task" and not fault.task_type:
            raise ValueError("a task fault needs 'type' (the worker type, e.g. qmcreate)")
        if fault.crash and kind != "task":
            raise ValueError("only a task fault can crash (an API call has no worker to kill)")
        self.faults.append(fault)
        return fault

    def clear(self, fault_id: int | None = None) -> None:
        self.faults = [f for f in self.faults if fault_id is not None and f.id != fault_id]

    def _take(self, fault: Fault) -> None:
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)

    async def check_http(self, method: str, path: str) -> dict[str, Any] | None:
        """Before an API call: raise the injected error, or just delay it (status 0), or
        return the body to answer with instead of the call's (``answer``)."""
        for fault in list(self.faults):
            if fault.kind != "http":
                continue
            if fault.method not in ("*", method):
                continue
            if fault.path and not fault.path.search(path):
                continue
            self._take(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.answer is not None:
                return fault.answer
            if fault.status:
                message = fault.message or "injected fault"
                if fault.status in (595, 596, 599):
                    raise ApiError(fault.status, message)
                raise ApiError(fault.status, message + "\n", fault.errors)
            return None
        return None

    async def check_task(self, typ: str, ident: str, node: str) -> None:
        """At a worker's start: delay it, then make it die with the injected message, or
        crash (WorkerCrashed)."""
        for fault in list(self.faults):
            if fault.kind != "task" or fault.task_type != typ:
                continue
            if fault.task_id and not fault.task_id.fullmatch(ident):
                continue
            self._take(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.crash:
                raise WorkerCrashed(f"{typ} {ident} on {node}")
            if fault.message:
                raise die(fault.message)
            return
