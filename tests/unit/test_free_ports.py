"""Listening ports for test stacks: never handed out twice, disjoint between test workers."""

from __future__ import annotations

import pytest

from demo import stack


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "LISTEN_PORTS", range(20000, 20030))
    monkeypatch.setattr(stack, "_handed_out", set())
    monkeypatch.setattr(stack, "port_is_free", lambda port: True)  # what others bound is not the subject


def test_a_port_is_handed_out_once_even_before_it_is_bound() -> None:
    ports = [stack.free_port() for _ in range(30)]
    assert sorted(ports) == list(range(20000, 20030))
    with pytest.raises(stack.StackError):
        stack.free_port()


def test_a_run_of_ports_is_handed_out_whole() -> None:
    first = stack.free_ports(3)
    assert 20000 <= first <= 20027
    rest = {stack.free_port() for _ in range(27)}
    assert rest.isdisjoint(range(first, first + 3))


def test_workers_take_disjoint_shares() -> None:
    shares = []
    for index in range(3):
        stack.use_port_share(index, 3)
        shares.append(stack.LISTEN_PORTS)
        stack.LISTEN_PORTS = range(20000, 20030)
    assert [list(s) for s in shares] == [list(range(20000 + 10 * i, 20010 + 10 * i)) for i in range(3)]
