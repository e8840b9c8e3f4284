"""One exception base per process: every exception class the agent's code defines derives
from AgentFault, every one shared/ defines from PvesphereError (which AgentFault extends),
and no two share a name (``except NoSpace`` must not depend on which one was imported)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import Counter

import agent
import shared
from agent.errors import AgentFault
from shared.errors import PvesphereError


def _exceptions(package: object) -> list[type[BaseException]]:
    found = []
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):  # type: ignore[attr-defined]
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == loaded.__name__:
                found.append(value)
    return found


def test_every_agent_exception_derives_from_the_agents_base() -> None:
    exceptions = _exceptions(agent)
    assert len(exceptions) > 15
    assert [e.__qualname__ for e in exceptions if not issubclass(e, AgentFault)] == []


def test_every_shared_exception_derives_from_the_projects_base() -> None:
    exceptions = _exceptions(shared)
    assert [e.__qualname__ for e in exceptions if not issubclass(e, PvesphereError)] == []
    assert issubclass(AgentFault, PvesphereError)


def test_no_two_exceptions_share_a_name() -> None:
    names = Counter(e.__name__ for e in _exceptions(agent) + _exceptions(shared))
    assert [name for name, count in names.items() if count > 1] == []
