"""The agent's view of its PVE (agent/pve.py) against the emulator's pvesh.

Every pvesh call is a process of its own: the status the heartbeat reports must not
start two of them every few seconds while PVE is healthy.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from agent import pve as pve_module
from agent.config import AgentConfig
from agent.pve import NodePve

from .conftest import NODES, Emulator


def _counting_pvesh(tmp_path: Path, real: Path) -> Path:
    """A pvesh that notes each call in calls.log, then runs the emulator's."""
    wrapper = tmp_path / "bin" / "pvesh"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.log"}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper.parent


def test_a_healthy_status_is_checked_once_a_minute_not_per_heartbeat(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _counting_pvesh(tmp_path, emulator.bin_dir(NODES[0]) / "pvesh")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    node = NodePve(AgentConfig(node=NODES[0], pve_timeout=60))
    calls = tmp_path / "calls.log"

    async def beats() -> list[bool]:
        return [(await node.status()).ok for _ in range(5)]  # heartbeats in a row

    assert asyncio.run(beats()) == [True] * 5
    assert len(calls.read_text().splitlines()) == 2  # version and cluster/status, once

    node._status_at -= 30  # heartbeats every 5 s for half a minute: still no new pvesh
    assert asyncio.run(node.status()).ok
    assert len(calls.read_text().splitlines()) == 2

    node._status_at -= pve_module.STATUS_TTL_OK  # a minute later
    status = asyncio.run(node.status())
    assert status.ok and status.version
    assert len(calls.read_text().splitlines()) == 4


def test_a_failing_status_is_checked_again_soon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-pvesh-here"))
    node = NodePve(AgentConfig(node=NODES[0], pve_timeout=60))
    status = asyncio.run(node.status())
    assert not status.ok and "pvesh not found" in (status.error or "")
    node._status_at -= pve_module.STATUS_TTL_FAILING  # 5 s later: asked again, not kept for a minute
    assert asyncio.run(node.status()) is not status
