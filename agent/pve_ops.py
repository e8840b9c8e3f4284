"""What imports (agent/importer.py) and clones (agent/cloner.py) share: a keyed operation
that makes one VM through PVE tasks, with a deadline and a cancel, run to an end.

However it fails, an operation ends ``failed`` with the reason and its unfinished VM removed
(never left ``running``): a taken VMID is someone else's VM and is never touched. A PVE that
does not answer (shared/pve_outage.py) is waited out: the operation tries again with backoff
until its deadline, and a failure then says what was retried. A PVE that says no (bad
parameters, a bad image, a full storage) fails it at once. An agent that stops ends its
operations ``interrupted``: the coordinator asks for them again once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from agent.errors import AgentFault
from agent.pve import PveCallError
from agent.pve_tasks import STOP_GRACE, TaskFailed, TaskLimit, WaitEnded
from agent.vms import DESTROY_SECONDS
from shared.deadlines import Deadline
from shared.error_slugs import ImportErrorKind
from shared.pve_outage import Retries, transient_reason

log = logging.getLogger(__name__)
# A canceled operation ends within this: its task stopped, then its unfinished VM destroyed.
CANCEL_WAIT = STOP_GRACE + DESTROY_SECONDS
# How soon a pause between tries notices a cancel.
PAUSE_STEP = 0.25


class OpFailed(AgentFault):
    """An operation's end, with the kind the coordinator acts on."""

    def __init__(self, message: str, kind: ImportErrorKind = ImportErrorKind.PVE_ERROR) -> None:
        super().__init__(message)
        self.kind = kind


class OpRequest(Protocol):
    """What every operation's request says: its key and the VMID it makes."""

    @property
    def key(self) -> str: ...

    @property
    def vmid(self) -> int: ...


ReqT = TypeVar("ReqT", bound=OpRequest)


@dataclass(kw_only=True)
class PveOp(Generic[ReqT]):
    req: ReqT
    limit: TaskLimit = field(repr=False)
    state: Literal["running", "done", "failed"] = "running"
    phase: str = "starting"
    progress: float = 0.0
    error: str | None = None
    # vmid_taken: pick another VMID and ask again; timeout, canceled: its limit was reached
    error_kind: ImportErrorKind | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.req.key

    @property
    def vmid(self) -> int:
        return self.req.vmid

    def seen(self) -> dict[str, Any]:
        """The fields every operation's view (its message) has."""
        return {
            "key": self.key,
            "vmid": self.vmid,
            "state": self.state,
            "phase": self.phase,
            "progress": round(self.progress, 2),
            "error": self.error,
            "error_kind": self.error_kind,
        }


def limit_reached(op: PveOp[Any], doing: str, exc: WaitEnded) -> OpFailed:
    """The failure of an operation whose wait on PVE reached its deadline or was canceled."""
    if op.limit.canceled is not None:
        return OpFailed(str(exc), ImportErrorKind.CANCELED)
    stopped = "was stopped" if exc.stopped else "did not stop when asked"
    return OpFailed(f"{doing} {exc}; its PVE task {stopped}", ImportErrorKind.TIMEOUT)


OpT = TypeVar("OpT", bound=PveOp[Any])


class PveOps(Generic[OpT]):
    """The operations of one kind (``what``: "import", "clone") by key."""

    what = "operation"

    def __init__(self) -> None:
        self.ops: dict[str, OpT] = {}
        self.stopping = False
        # Told each operation's result when it ends ("done", "failed"): the agent's metrics.
        self.ended: Callable[[str], None] = lambda result: None

    def running(self) -> list[OpT]:
        return [op for op in self.ops.values() if op.state == "running"]

    def running_vmids(self) -> set[int]:
        """VMIDs an operation is working on (its create may not have begun yet)."""
        return {op.vmid for op in self.running()}

    def _launch(self, op: OpT) -> OpT:
        self.ops[op.key] = op
        op.task = asyncio.create_task(self._run(op), name=f"{self.what}-{op.key}")
        return op

    async def cancel(self, key: str, reason: str) -> OpT | None:
        """Stop a running operation (its PVE task too) and wait until it has ended, its
        unfinished VM removed. A finished one is left as it is."""
        op = self.ops.get(key)
        if op is None:
            return None
        if op.state == "running" and op.task is not None:
            log.info("%s %s: canceling (%s)", self.what, key, reason)
            op.limit.cancel(reason)
            await asyncio.wait({op.task}, timeout=CANCEL_WAIT)
        return op

    async def stop(self, wait: float) -> None:
        """The agent is stopping: end every running operation as a cancel does, within
        ``wait`` seconds. They end ``interrupted``."""
        self.stopping = True
        tasks = {op.task for op in self.running() if op.task is not None}
        for op in self.running():
            op.limit.cancel("the agent is stopping")
        if tasks:
            await asyncio.wait(tasks, timeout=wait)

    async def _work(self, op: OpT) -> None:
        """One operation from start to finish (tries again itself: ``_retrying``)."""
        raise NotImplementedError

    async def _remove_half_made(self, op: OpT) -> None:
        raise NotImplementedError

    async def _run(self, op: OpT) -> None:
        try:
            await self._work(op)
            op.state, op.phase, op.progress = "done", "done", 100.0
            self.ended("done")
            return
        except OpFailed as exc:
            error, kind = str(exc), exc.kind
        except (PveCallError, TaskFailed) as exc:
            error, kind = str(exc), ImportErrorKind.PVE_ERROR
        except asyncio.CancelledError:
            op.state, op.error = "failed", f"agent stopped during the {self.what}"
            op.error_kind = ImportErrorKind.INTERRUPTED
            self.ended("failed")
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the operation ends with it
            log.exception("%s %s: unexpected error", self.what, op.key)
            error, kind = f"{exc.__class__.__name__}: {exc}", ImportErrorKind.AGENT_ERROR
        if self.stopping:
            kind = ImportErrorKind.INTERRUPTED  # not its fault: asked for again after the restart
        log.warning("%s %s failed: %s", self.what, op.key, error)
        if kind != ImportErrorKind.VMID_TAKEN:  # a taken VMID is someone else's VM: never touch it
            await self._remove_half_made(op)
        # Failed only once the VM is gone: whoever reads "failed" may retry with this VMID.
        op.state, op.error, op.error_kind = "failed", error, kind
        self.ended("failed")

    async def _retrying(
        self, op: OpT, one_try: Callable[[], Awaitable[None]], after_pause: Callable[[], Awaitable[None]]
    ) -> None:
        """``one_try`` again with backoff while PVE does not answer and the limit allows; each
        try starts by looking at what exists, so a call whose answer was lost is neither
        repeated beside its VM nor taken for someone else's. ``after_pause`` runs before the
        next try (e.g. waiting for a task PVE may still run)."""
        retries = Retries()
        while True:
            try:
                await one_try()
                if retries.count:
                    log.info("%s %s: PVE answered again; done after %s", self.what, op.key, retries.summary())
                return
            except WaitEnded:
                raise
            except (PveCallError, TaskFailed) as exc:
                reason = transient_reason(getattr(exc, "status", None), str(exc))
                if reason is None:
                    raise
                delay = retries.failed(reason, str(exc), op.limit.deadline.remaining())
                if delay is None:
                    raise OpFailed(
                        f"{retries.summary()}; no time left for another try within the {self.what}'s "
                        f"deadline ({op.limit.deadline.seconds:.0f} s)",
                        ImportErrorKind.PVE_UNREACHABLE,
                    ) from None
            log.warning("%s %s: %s; trying again in %.0f s", self.what, op.key, retries.summary(), delay)
            op.phase = f"waiting for PVE ({', '.join(retries.reasons)})"
            wait = Deadline(delay)
            while not wait.passed():
                reached = op.limit.reached()
                if reached is not None:
                    canceled = op.limit.canceled is not None
                    kind = ImportErrorKind.CANCELED if canceled else ImportErrorKind.TIMEOUT
                    raise OpFailed(f"{retries.summary()}; {reached}", kind)
                await asyncio.sleep(min(PAUSE_STEP, wait.remaining()))
            await after_pause()
