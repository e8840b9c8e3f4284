"""API handlers: one module per area (cluster, storage, qemu, tasks).

A handler gets the validated parameters (as the strings Perl would see) and the request
context, and returns the `data` of PVE's answer. Handlers register themselves with @route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pvesim.auth import Principal
from pvesim.errors import perm_error
from pvesim.state import Cluster
from pvesim.tasks import TaskManager, Worker


@dataclass
class Request:
    cluster: Cluster
    tasks: TaskManager
    principal: Principal
    local_node: str  # the node that answers (pvesh: its own node; https: the first node)
    total: int | None = None  # PVE's 'total' result attribute
    worker_upid: str | None = None

    @property
    def user(self) -> str:
        return self.principal.userid

    def check(self, path: str, privs: list[str], any_of: bool = False) -> None:
        """rpcenv->check: the emulator has no ACLs, so only superusers hold privileges."""
        if not self.principal.is_superuser:
            raise perm_error(f"{path}, {'|'.join(privs)}")

    def can(self, path: str, privs: list[str]) -> bool:
        return self.principal.is_superuser

    def fork_worker(self, node: str, typ: str, ident: str, worker: Worker) -> str:
        upid = self.tasks.start(node, typ, ident, self.user, worker, cli=self.principal.cli)
        self.worker_upid = upid
        return upid


Handler = Callable[[Request, dict[str, str]], Awaitable[Any]]
HANDLERS: dict[tuple[str, str], Handler] = {}


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[(path, method)] = fn
        return fn

    return deco


def load_handlers() -> dict[tuple[str, str], Handler]:
    # importing the modules registers their routes
    from pvesim.api import cluster, qemu, qemu_power, qemu_snapshots, storage, tasks  # noqa: F401

    return HANDLERS


def as_bool(value: str | None) -> bool:
    return value not in (None, "", "0")
