"""Work that makes an upload's staged image on this agent (an export, a download): one op per
upload id, in a background task, which can be canceled (its partial file removed by the op
itself) and is stopped with the agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from agent.errors import AgentFault
from agent.validate import ImageRejected
from shared.error_slugs import ErrorSlug

log = logging.getLogger(__name__)
T = TypeVar("T")


class UploadOpFailed(AgentFault):
    """An op's failure, with the status and slug the coordinator answers with."""

    def __init__(self, status: int, slug: ErrorSlug, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug
        self.message = message


class UploadOp(Protocol):
    req: Any  # (its upload_id)
    state: Any  # "running" until it ends: "done" or "failed"
    phase: str
    error: str | None
    slug: ErrorSlug | None
    status: int | None
    canceled: str | None
    task: asyncio.Task[None] | None


OpT = TypeVar("OpT", bound=UploadOp)


class UploadOps(Generic[OpT]):
    """The ops by upload id; ``kind`` names them in the log ("export", "download")."""

    def __init__(self, kind: str, cancel_wait: float) -> None:
        self.kind = kind
        self.cancel_wait = cancel_wait
        self.ops: dict[int, OpT] = {}
        self.stopping = False
        # Told each op's result when it ends ("done", "failed"): the agent's metrics.
        self.ended: Callable[[str], None] = lambda result: None

    async def cancel(self, upload_id: int, reason: str) -> OpT | None:
        """Stop a running op and wait (at most ``cancel_wait``) until it has ended."""
        op = self.ops.get(upload_id)
        if op is None:
            return None
        if op.state == "running" and op.task is not None:
            log.info("%s for upload %s: canceling (%s)", self.kind, upload_id, reason)
            op.canceled = reason
            op.task.cancel()
            await asyncio.wait({op.task}, timeout=self.cancel_wait)
        return op

    async def stop(self, wait: float) -> None:
        """Cancel every running op (the agent is stopping); wait at most ``wait`` for them."""
        self.stopping = True
        tasks = {op.task for op in self.ops.values() if op.state == "running" and op.task is not None}
        for op in self.ops.values():
            if op.state == "running":
                op.canceled = "the agent is stopping"
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)

    async def settle(self, op: OpT, part: Path, work: Awaitable[T], slug: ErrorSlug) -> T | None:
        """``work``'s result; None when it failed or was canceled, the op then failed with
        why (``slug`` for what has none of its own) and ``part`` removed."""
        try:
            return await work
        except asyncio.CancelledError:
            part.unlink(missing_ok=True)
            self.fail(op, 409, slug, f"{self.kind} canceled: {op.canceled or 'canceled'}")
            if op.canceled is None:
                raise
        except UploadOpFailed as exc:
            part.unlink(missing_ok=True)
            self.fail(op, exc.status, exc.slug, exc.message)
        except ImageRejected as exc:
            part.unlink(missing_ok=True)
            self.fail(op, exc.status, ErrorSlug.IMAGE_REJECTED, exc.reason)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the op ends with it
            part.unlink(missing_ok=True)
            log.exception("%s for upload %s: unexpected error", self.kind, op.req.upload_id)
            self.fail(op, 502, slug, f"{exc.__class__.__name__}: {exc}")
        return None

    def fail(self, op: OpT, status: int, slug: ErrorSlug, message: str) -> None:
        log.warning("%s for upload %s failed: %s", self.kind, op.req.upload_id, message)
        op.state, op.phase, op.error, op.slug, op.status = "failed", "failed", message, slug, status
        self.ended("failed")
