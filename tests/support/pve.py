"""An operator's PVE having a bad day: down for a while, answering with errors, out of space.

The emulator stops alone (agents and coordinator keep running) and comes back on the same
port with the same state; its control API injects failing calls and fills a storage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from demo.stack import Stack
from tests.support.uploads import emulator, wait_for


@dataclass
class Outage:
    started: float = 0.0  # time.monotonic() when PVE went down
    ended: float = 0.0  # ... and when it answered again

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@contextmanager
def pve_down(stack: Stack) -> Iterator[Outage]:
    """Inside: the emulator is gone (killed: its running tasks die with it). On the way out it
    is started again and answers before this returns."""
    outage = Outage(time.monotonic())
    stack.stop_emulator()
    try:
        yield outage
    finally:
        stack.start_emulator()
        outage.ended = time.monotonic()


def fail_calls(stack: Stack, method: str, path: str, status: int, times: int = 1, message: str = "") -> int:
    """The next ``times`` PVE API calls ``method`` on a path matching the regex ``path`` answer
    ``status`` (``message`` as PVE's text); returns the fault's id."""
    spec = {"method": method, "path": path, "status": status, "times": times, "message": message}
    return int(emulator(stack, "POST", "/pvesim/faults", spec)["id"])


@contextmanager
def answering(stack: Stack, method: str, path: str, body: dict[str, Any]) -> Iterator[None]:
    """While inside, PVE API calls ``method`` on a path matching the regex ``path`` answer 200
    with ``body`` instead of doing anything (a PVE, or a proxy before it, saying the unexpected)."""
    spec = {"method": method, "path": path, "answer": body, "times": None}
    fault_id = int(emulator(stack, "POST", "/pvesim/faults", spec)["id"])
    try:
        yield
    finally:
        emulator(stack, "DELETE", f"/pvesim/faults/{fault_id}")


def hold_call(stack: Stack, method: str, path: str, seconds: float) -> int:
    """The next call ``method`` ``path`` waits ``seconds`` before PVE looks at it (a PVE that
    goes down meanwhile never acts on it); returns the fault's id for ``wait_held``."""
    spec = {"method": method, "path": path, "status": 0, "delay": seconds, "times": 1}
    return int(emulator(stack, "POST", "/pvesim/faults", spec)["id"])


def wait_held(stack: Stack, fault_id: int, timeout: float = 60) -> None:
    """Until the call that ``hold_call`` waits for has arrived (its fault is used up)."""

    def taken() -> bool:
        return all(f["id"] != fault_id for f in emulator(stack, "GET", "/pvesim/faults"))

    wait_for(taken, timeout, "the held PVE call to arrive")


def limit_free_space(stack: Stack, node: str, storage: str, free: int | None) -> None:
    """PVE's ``storage`` on ``node`` has at most ``free`` bytes left (None: its real space)."""
    emulator(stack, "POST", "/pvesim/settings", {"storage_free": {node: {storage: free}}})


def vms_marked(stack: Stack, key_prefix: str) -> list[tuple[str, int]]:
    """(node, VMID) of every VM in the emulator's state made by an import whose key starts with
    ``key_prefix`` (its marker in the description: 't7-' for template 7's) or left without a
    description by a create cut short."""
    found = []
    for node in stack.node_names():
        for conf in (stack.pvesim_dir / "nodes" / node / "qemu-server").glob("*.conf"):
            text = conf.read_text()
            if f"[pvesphere {key_prefix}" in text or "lock: create" in text:
                found.append((node, int(conf.stem)))
    return found
