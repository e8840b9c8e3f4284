"""Which clones count (coordinator/clones_in_pve.py): one whose VM PVE no longer holds does
not; one not completed yet (no VM of its own) does, and every one does when PVE did not answer."""

from __future__ import annotations

from coordinator.clones_in_pve import counted
from coordinator.db.models import Clone


def _clone(vmid: int, status: str) -> Clone:
    return Clone(vmid=vmid, status=status, cluster_id=1)


def test_a_clone_whose_vm_is_gone_from_pve_no_longer_counts() -> None:
    kept, destroyed, cloning = _clone(201, "completed"), _clone(202, "completed"), _clone(203, "cloning")
    clones = [kept, destroyed, cloning]
    assert counted(clones, {201, 999}) == [kept, cloning]
    assert counted(clones, None) == clones  # PVE did not answer: all count
    assert counted(clones, set()) == [cloning]
