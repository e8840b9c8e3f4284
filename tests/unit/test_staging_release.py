"""Whether the coordinator lets an agent evict a staged copy (coordinator/staging_release.py)."""

from __future__ import annotations

from coordinator.staging_release import HeldCopy, TaskState, why_needed

A, B, C = 1, 2, 3
LIVE = {A, B, C}
UPLOAD_ON_A = HeldCopy(A, "pve-a", None)
SYNCED_TO_B = HeldCopy(B, "pve-b", 7)


def test_an_unneeded_copy_may_go_when_another_node_holds_the_image() -> None:
    done = [TaskState(7, "completed", B, ("pve-a",))]
    assert why_needed(SYNCED_TO_B, "imported", True, done, {A}, LIVE) is None
    assert why_needed(UPLOAD_ON_A, "imported", True, done, {B}, LIVE) is None


def test_the_upload_being_imported_keeps_its_image() -> None:
    reason = why_needed(UPLOAD_ON_A, "importing", True, [], {B}, LIVE)
    assert reason is not None and "importing" in reason


def test_a_sync_sending_from_the_node_keeps_its_copy() -> None:
    relayed = [TaskState(8, "syncing", C, ("pve-a", "pve-b"))]
    reason = why_needed(SYNCED_TO_B, "imported", True, relayed, {A}, LIVE)
    assert reason == "sync task 8 sends from this copy"


def test_the_copy_a_sync_task_still_imports_or_receives_stays() -> None:
    for status in ("syncing", "importing"):
        mine = [TaskState(7, status, B, ("pve-a",))]
        assert (
            why_needed(SYNCED_TO_B, "imported", True, mine, {A}, LIVE)
            == f"sync task 7 is {status}: this is its copy"
        )


def test_the_last_copy_of_a_live_template_is_never_evicted() -> None:
    reason = why_needed(UPLOAD_ON_A, "imported", True, [], set(), LIVE)
    assert reason is not None and "last staged copy" in reason
    # Of a deleted template it may go (the delete removes it anyway).
    assert why_needed(UPLOAD_ON_A, "imported", False, [], set(), LIVE) is None


def test_pending_work_keeps_a_copy_when_the_other_holders_are_down() -> None:
    waiting = [TaskState(9, "pending", C, ("",))]
    reason = why_needed(SYNCED_TO_B, "imported", True, waiting, {A}, {B, C})
    assert reason is not None and "pending sync task 9" in reason
    assert why_needed(SYNCED_TO_B, "imported", True, waiting, {A}, LIVE) is None
