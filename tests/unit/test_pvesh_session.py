"""A pvesh call that outlives its timeout ends the process (and what it started), reaped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.pve import NodePve, PveCallError
from agent.pvesh_session import local_api

HANGING_PVESH = """#!/bin/sh
sleep 60 &
echo "$$ $!" > "{pids}"
wait
"""


def alive(pid: int) -> bool:
    """Running or a zombie: /proc still has it."""
    return Path(f"/proc/{pid}").exists()


def test_a_call_past_its_timeout_leaves_no_pvesh_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    pvesh = tmp_path / "bin" / "pvesh"
    pvesh.parent.mkdir()
    pvesh.write_text(HANGING_PVESH.format(pids=pids))
    pvesh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{pvesh.parent}:{os.environ['PATH']}")

    started = time.monotonic()
    with pytest.raises(PveCallError, match="PVE did not answer within 1 s"):
        NodePve._call(local_api(1.0), "get", "nodes/pve-node1/qemu", {})
    assert time.monotonic() - started < 5
    shell, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(shell) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(shell), "pvesh is still running (or was never reaped)"
    assert not alive(child), "what pvesh started is still running"


def test_a_call_in_time_answers_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pvesh = tmp_path / "bin" / "pvesh"
    pvesh.parent.mkdir()
    pvesh.write_text('#!/bin/sh\necho \'{"version": "9.0.3"}\'\n')
    pvesh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{pvesh.parent}:{os.environ['PATH']}")
    assert NodePve._call(local_api(5), "get", "version", {}) == {"version": "9.0.3"}
