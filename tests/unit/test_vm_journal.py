"""Who owns a VM: our marker, or a create of ours cut off at `lock: create` (the journal)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.vm_journal import Entry, VmJournal, belongs, marker, owner_key
from coordinator.jobs.vm_sweep import unaccounted
from shared.messages.vms import ListedVm

ENTRY = Entry("t3-u7", 0.0)


def test_the_marker_proves_a_vm_ours_with_or_without_a_journal_entry() -> None:
    config = {"description": "Ubuntu 24.04\n\n" + marker("t3-u7"), "template": 1}
    assert owner_key(config, None) == "t3-u7"
    assert owner_key(config, Entry("t9-s1", 0.0)) == "t3-u7"  # the marker wins


def test_a_journal_entry_proves_only_a_vm_cut_off_mid_create() -> None:
    assert owner_key({"lock": "create"}, ENTRY) == "t3-u7"
    # A finished VM without our marker was not made by our create (ours writes the marker).
    assert owner_key({"name": "web", "description": "admin's"}, ENTRY) is None
    assert owner_key({"lock": "backup"}, ENTRY) is None
    # Cut off mid-create but not in our journal: someone else's create.
    assert owner_key({"lock": "create"}, None) is None


def test_a_similar_description_is_not_our_marker() -> None:
    for text in ("[pvesphere]", "pvesphere t3-u7", "[pvesphere t3-x7]", "[pvesphere 3-u7]"):
        assert owner_key({"description": text}, None) is None, text


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        ("t3-u1", "t3-u1", True),
        ("t3-u10", "t3-u1", False),  # a whole key is not a prefix of a longer one
        ("t3-u10", "t3-", True),
        ("t31-u1", "t3-", False),
        ("t3-s4", "t", True),
    ],
)
def test_belongs(key: str, prefix: str, expected: bool) -> None:
    assert belongs(key, prefix) is expected


def test_the_journal_survives_a_restart_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "vm-journal.json"
    journal = VmJournal(path)
    journal.record(9001, "t3-u7")
    journal.record(9002, "t3-s8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    journal.forget(9001)
    again = VmJournal(path)  # what an agent restarted after a kill reads
    assert set(again.entries) == {9002}
    assert again.get(9002) is not None and again.get(9002).key == "t3-s8"  # type: ignore[union-attr]
    assert not list(path.parent.glob(".*.tmp"))


def test_an_unreadable_journal_stops_the_agent_instead_of_forgetting(tmp_path: Path) -> None:
    path = tmp_path / "vm-journal.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable"):
        VmJournal(path)


def test_the_sweep_judges_only_vms_nothing_accounts_for_and_no_import_works_on() -> None:
    def vm(vmid: int, importing: bool) -> ListedVm:
        return ListedVm(vmid, name="", lock=None, template=False, journal_key=None, importing=importing)

    listed = [vm(9000, False), vm(9001, False), vm(9002, True), vm(9003, False)]
    assert unaccounted(listed, {9000}) == [9001, 9003]


def test_a_clone_is_ours_by_its_marker_or_cut_off_at_lock_clone() -> None:
    clone = Entry("c12", 0.0)
    assert owner_key({"description": "web\n\n" + marker("c12")}, None) == "c12"
    assert owner_key({"lock": "clone"}, clone) == "c12"  # PVE's temporary config, before the marker
    assert owner_key({"lock": "create"}, clone) is None  # a clone never holds `lock: create`
    assert owner_key({"lock": "clone"}, ENTRY) is None  # nor an import `lock: clone`


def test_a_finished_clone_belongs_to_no_prefix_of_ours() -> None:
    # a finished clone has no marker, and its `done` entry vouches for nothing
    assert owner_key({"name": "web-1", "description": "mine"}, Entry("c12", 0.0, done=True)) is None
    assert owner_key({"lock": "clone"}, Entry("c12", 0.0, done=True)) is None
    # while made, no template prefix (a cascade delete's, the sweep's) covers a clone key
    for prefix in ("t", "t1", "t1-", "c1"):
        assert not belongs("c12", prefix), prefix
    assert belongs("c12", "c12")


def test_finished_clones_are_remembered_a_day_and_not_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "vm-journal.json"
    journal = VmJournal(path)
    journal.record(5001, "c1")
    journal.record(5002, "c2")
    journal.finished_clone(5002, "c2")
    again = VmJournal(path)
    assert set(again.in_flight()) == {5001}
    entry = again.get(5002)
    assert entry is not None and entry.done and entry.key == "c2"
    again.entries[5002] = Entry("c2", 0.0, done=True)  # written long ago
    again.record(5003, "c3")  # any change drops old finished entries
    assert set(VmJournal(path).entries) == {5001, 5003}
