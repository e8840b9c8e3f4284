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
from agent.pve import NodePve, PveCallError
from shared.pve_outage import transient_reason

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


def test_an_offline_node_is_pve_not_answering_and_the_status_says_so_at_once(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pvesh on a node the emulator holds offline fails as on a node whose pmxcfs is away
    (PVE's ipcc words, not Python's): a PVE that did not answer, not one that said no. The
    agent's status, healthy a moment ago, is asked again at the next heartbeat."""
    node_name = NODES[1]
    monkeypatch.setenv("PATH", f"{emulator.bin_dir(node_name)}{os.pathsep}{os.environ.get('PATH', '')}")
    node = NodePve(AgentConfig(node=node_name, pve_timeout=60))
    assert asyncio.run(node.status()).ok
    emulator.control("POST", f"/nodes/{node_name}/offline")
    try:
        with pytest.raises(PveCallError) as failed:
            asyncio.run(node.call("delete", f"nodes/{node_name}/qemu/4242"))
        message = str(failed.value)
        assert "ipcc_send_rec[1] failed: Connection refused" in message, message
        assert "Unable to load access control list: Connection refused" in message
        assert "unpack" not in message and "ValueError" not in message  # no Python leaks out
        assert transient_reason(failed.value.status, message) == "connection refused"
        status = asyncio.run(node.status())  # the next heartbeat, well within the minute
        assert not status.ok and "Connection refused" in (status.error or "")
    finally:
        emulator.control("POST", f"/nodes/{node_name}/online")
    node._status_at -= pve_module.STATUS_TTL_FAILING
    assert asyncio.run(node.status()).ok  # back
