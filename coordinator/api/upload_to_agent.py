"""An upload's bytes handed to its import node's agent, with deadlines on the agent's turns.

The handler passes the client's bytes on as they come (api/upload.py). Its waits on the
client are bounded by IdleWatch (client_idle.py); its waits on the agent here: the agent
must take each chunk within ``stall`` seconds and answer within ``answer_seconds(size)``
of the last byte (shared/turn_deadline.py). Without them a hung agent (a stuck disk, a
wedged process) held the upload, its slot and its client for ever: the agent call had no
overall timeout, because a 50 GiB image may rightly take an hour to cross.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from agent.client import AgentClient, AgentUnreachable
from shared.deadlines import UPLOAD_STALL_SECONDS, upload_answer_seconds
from shared.messages.uploads import Staged
from shared.turn_deadline import PeerStalled, TurnDeadline, watched_body

T = TypeVar("T")
Body = AsyncIterator[bytes | memoryview]


async def upload_to_agent(
    agent: AgentClient,
    upload_id: int,
    fmt: str,
    max_bytes: int,
    max_virtual_size: int,
    chunks: Body,
    file_name: str,
    size_hint: int | None,
    stall: float = UPLOAD_STALL_SECONDS,
    answer_seconds: Callable[[int], float] = upload_answer_seconds,
) -> Staged:
    """``agent.upload`` of ``chunks``; AgentUnreachable saying which deadline it missed."""

    def send(body: Body) -> Awaitable[Staged]:
        return agent.upload(upload_id, fmt, max_bytes, max_virtual_size, body, file_name, size_hint=size_hint)

    return await bounded_send(send, chunks, stall, answer_seconds)


async def bounded_send(
    send: Callable[[Body], Awaitable[T]],
    chunks: Body,
    stall: float = UPLOAD_STALL_SECONDS,
    answer_seconds: Callable[[int], float] = upload_answer_seconds,
) -> T:
    """``send(body)`` of ``chunks`` (a call to an agent streaming them), with deadlines on the
    agent's turns; AgentUnreachable saying which deadline it missed."""
    turns = TurnDeadline()
    try:
        async with turns.bounded():
            return await send(watched_body(turns, chunks, stall, answer_seconds))
    except PeerStalled as exc:
        raise AgentUnreachable(str(exc)) from None  # (the caller names the node)
