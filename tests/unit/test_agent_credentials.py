"""Node credentials: recomputed from the coordinator's key, bound to one node and one enrolment."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.agents.credentials import Credentials, NodeClaim

KEY = bytes(range(32))


def test_a_credential_names_its_node_and_generation_and_checks_out() -> None:
    credentials = Credentials(KEY)
    credential = credentials.for_node("pve-node2", 3)
    assert credential.startswith("pvsa.pve-node2.3.")
    assert credentials.check(credential) == NodeClaim("pve-node2", 3)
    assert credentials.for_node("pve-node2", 3) == credential  # recomputed, never stored


def test_another_node_generation_or_key_gives_another_credential() -> None:
    credentials = Credentials(KEY)
    mine = credentials.for_node("pve-node2", 1)
    assert credentials.for_node("pve-node3", 1) != mine
    assert credentials.for_node("pve-node2", 2) != mine
    assert Credentials(bytes(32)).check(mine) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.replace("pve-node2", "pve-node3"),  # claims another node with node2's MAC
        lambda c: c.replace(".1.", ".2.", 1),  # another enrolment
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
        lambda c: c + "\n",
        lambda c: "pvst_" + c[4:],
        lambda c: c.replace("pve-node2", "pve.node2"),
        lambda c: c.replace(".1.", ".¹.", 1),
        lambda c: c + "é",
        lambda c: "",
    ],
)
def test_altered_credentials_are_refused(change) -> None:  # type: ignore[no-untyped-def]
    credentials = Credentials(KEY)
    assert credentials.check(change(credentials.for_node("pve-node2", 1))) is None


def test_the_key_file_is_private_made_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "agent-credential.key"
    first = Credentials.from_file(path).for_node("pve1", 1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.from_file(path).for_node("pve1", 1) == first
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
