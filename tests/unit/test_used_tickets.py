"""Spent ticket ids outlive the agent process, until the tickets expire."""

from __future__ import annotations

import time
from pathlib import Path

from agent.transfer.used_tickets import UsedTickets


def test_spent_tickets_are_remembered_across_a_restart_until_they_expire(tmp_path: Path) -> None:
    path = tmp_path / "receives" / "used-tickets.json"
    used = UsedTickets(path)
    now = time.time()
    used.add("a" * 24, now + 300)
    used.add("b" * 24, now - 1)  # already expired when it was spent
    again = UsedTickets(path)  # a restarted agent
    assert "a" * 24 in again and "b" * 24 in again
    again.add("c" * 24, now + 300)  # each save drops what has expired
    third = UsedTickets(path)
    assert "a" * 24 in third and "c" * 24 in third and "b" * 24 not in third
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["used-tickets.json"]


def test_an_unreadable_list_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "used-tickets.json"
    path.write_text("{not json")
    assert "x" not in UsedTickets(path)
