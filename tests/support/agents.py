"""Calling a node's agent directly, through agent/client.py with that node's credential
(as the coordinator does): for what the coordinator's API would refuse before it got there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from agent.client import AgentClient
from demo.stack import Stack

T = TypeVar("T")


def call_agent(stack: Stack, node: str, call: Callable[[AgentClient], Awaitable[T]]) -> T:
    """``call(client)`` against ``node``'s agent; returns what it returns."""

    async def run() -> T:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.client_tls())) as session:
            return await call(AgentClient(session, stack.agent_url(node), stack.agent_credential(node)))

    return asyncio.run(run())
