"""Deadlines of waits on PVE and agents: scaled by the image's size, and which side ends first."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig
from agent.pve import NodePve, PveCallError
from agent.pve_tasks import TaskLimit, WaitEnded
from coordinator.config import CoordinatorConfig
from shared.deadlines import GIB, Deadline, scaled_timeout


def test_a_deadline_is_a_base_plus_seconds_per_gib_of_the_image() -> None:
    assert scaled_timeout(600, 120, 0) == 600
    assert scaled_timeout(600, 120, 50 * GIB) == 6600
    assert scaled_timeout(600, 120, GIB // 2) == 660  # a part GiB counts in part
    assert scaled_timeout(10, 0, 50 * GIB) == 10
    assert scaled_timeout(600, 120, -1) == 600  # an unknown size (never negative time)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_passes_after_its_seconds_and_says_so() -> None:
    clock = Clock()
    deadline = Deadline(30, clock)
    clock.now += 29.5
    assert not deadline.passed() and deadline.remaining() == 0.5
    clock.now += 0.5
    assert deadline.passed() and deadline.remaining() == 0
    assert deadline.missed() == "did not finish within 30 s"


@pytest.mark.parametrize("size", [0, GIB, 50 * GIB, 2048 * GIB])
def test_by_default_the_coordinator_waits_longer_than_the_agent(size: int) -> None:
    """So that an import that takes too long fails with the agent's reason (which PVE task,
    stopped), not the coordinator's bare "waited too long"."""
    agent, coordinator = AgentConfig(), CoordinatorConfig()
    agent_seconds = scaled_timeout(agent.import_timeout, agent.import_seconds_per_gib, size)
    coordinator_seconds = scaled_timeout(coordinator.import_timeout, coordinator.import_seconds_per_gib, size)
    assert coordinator_seconds > agent_seconds
    # generous for a 50 GiB import on slow storage: at least an hour
    if size >= 50 * GIB:
        assert agent_seconds >= 3600


def test_a_task_limit_ends_waits_at_its_deadline_or_when_canceled() -> None:
    open_ended = TaskLimit(3600)
    assert open_ended.reached() is None
    open_ended.check()  # nothing to say: the wait goes on

    late = TaskLimit(0)
    assert late.reached() == "did not finish within 0 s"
    with pytest.raises(WaitEnded, match="did not finish within 0 s"):
        late.check()

    # A cancel says why, and wins over the deadline; the first reason stays.
    late.cancel("template deleted")
    late.cancel("something else")
    assert late.reached() == "canceled: template deleted"


async def test_a_command_that_cannot_start_is_a_pve_call_error_with_the_reason() -> None:
    """A NUL byte cannot be passed to a process: subprocess raises ValueError before pvesh
    runs. The agent must see a failed call naming that, not an exception it does not expect."""
    pve = NodePve(AgentConfig(node="pve-node1", pve_backend="local"))
    with pytest.raises(PveCallError, match="CREATE /nodes/pve-node1/qemu: ValueError: embedded null byte"):
        await pve.call("create", "nodes/pve-node1/qemu", vmid=9000, description="a\0b")
