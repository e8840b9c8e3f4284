"""Each entity's transition table, exhaustively: every (from, to) pair of its statuses is
allowed exactly when the lifecycle below says so (coordinator/states/)."""

from __future__ import annotations

from enum import StrEnum
from itertools import product
from typing import Any, get_args

import pytest

from coordinator.states import clone, deletion, instance, sync_task, template, upload
from coordinator.states.transitions import Transitions

# The lifecycles, written out independently of the modules' tables.
EXPECTED: dict[str, tuple[Transitions[Any], type[StrEnum], set[tuple[str, str]]]] = {
    "sync_task": (
        sync_task.TRANSITIONS,
        sync_task.SyncTaskStatus,
        {
            ("pending", "syncing"),  # claimed: its chain starts
            ("pending", "failed"),  # no node holds a copy to send any more
            ("pending", "canceled"),  # canceled, or its template deleted
            ("syncing", "importing"),  # the copy is verified
            ("syncing", "pending"),  # the attempt failed, or never started
            ("syncing", "failed"),
            ("syncing", "canceled"),
            ("importing", "completed"),
            ("importing", "pending"),
            ("importing", "failed"),
            ("failed", "pending"),  # retried
            ("canceled", "pending"),  # retried: a cancel keeps the verified bytes for it
        },
    ),
    "instance": (
        instance.TRANSITIONS,
        instance.InstanceStatus,
        {
            ("pending", "syncing"),
            ("pending", "failed"),
            ("pending", "deleted"),
            ("syncing", "importing"),
            ("syncing", "pending"),
            ("syncing", "failed"),
            ("syncing", "deleted"),
            ("importing", "available"),
            ("importing", "pending"),
            ("importing", "failed"),
            ("importing", "deleted"),
            ("failed", "pending"),
            ("failed", "deleted"),
            ("available", "deleted"),
        },
    ),
    "upload": (
        upload.TRANSITIONS,
        upload.UploadStatus,
        {
            ("uploading", "uploaded"),
            ("uploading", "failed"),
            ("uploaded", "importing"),
            ("uploaded", "failed"),
            ("importing", "imported"),
            ("importing", "failed"),
            ("imported", "deleting"),  # its version is deleted (or pruned by keep_versions)
            ("failed", "deleting"),
            ("deleting", "deleted"),
        },
    ),
    "template": (
        template.TRANSITIONS,
        template.TemplateStatus,
        {
            ("active", "deleting"),
            ("active", "deleted"),
            ("deleting", "deleted"),
            ("deleted", "deleting"),  # a cascade removes what a soft delete left
        },
    ),
    "deletion": (
        deletion.TRANSITIONS,
        deletion.DeletionStatus,
        {
            ("running", "done"),
            ("running", "failed"),
            ("done", "running"),
            ("failed", "running"),
        },
    ),
    "clone": (
        clone.TRANSITIONS,
        clone.CloneStatus,
        {
            ("pending", "cloning"),  # a VMID held, the agent asked
            ("pending", "failed"),
            ("waiting_for_sync", "cloning"),  # its sync task completed
            ("waiting_for_sync", "failed"),  # its sync task failed or was canceled
            ("cloning", "completed"),
            ("cloning", "failed"),  # PVE failed it (the agent destroyed the half-made VM)
        },
    ),
}


@pytest.mark.parametrize("entity", sorted(EXPECTED))
def test_every_pair_of_statuses_is_allowed_exactly_as_the_lifecycle_says(entity: str) -> None:
    transitions, statuses, expected = EXPECTED[entity]
    allowed = {
        (old.value, new.value) for old, new in product(statuses, statuses) if transitions.allowed(old, new)
    }
    assert allowed == expected


@pytest.mark.parametrize("entity", sorted(EXPECTED))
def test_sources_are_the_statuses_that_may_reach_a_status(entity: str) -> None:
    transitions, statuses, expected = EXPECTED[entity]
    for new in statuses:
        assert set(transitions.sources(new)) == {old for old, to in expected if to == new}


@pytest.mark.parametrize("entity", sorted(EXPECTED))
def test_no_status_goes_to_itself_and_unknown_ones_go_nowhere(entity: str) -> None:
    transitions, statuses, _ = EXPECTED[entity]
    assert not any(transitions.allowed(s, s) for s in statuses)
    assert not any(transitions.allowed("bogus", s) for s in statuses)


def test_final_statuses_go_nowhere() -> None:
    assert not any(sync_task.TRANSITIONS.allowed("completed", s) for s in sync_task.SyncTaskStatus)
    for status in ("completed", "failed"):
        assert not any(clone.TRANSITIONS.allowed(status, s) for s in clone.CloneStatus)
    for status in upload.FINAL:  # an import that ended: only its version's delete moves it
        assert [s for s in upload.UploadStatus if upload.TRANSITIONS.allowed(status, s)] == ["deleting"]
    assert not any(upload.TRANSITIONS.allowed("deleted", s) for s in upload.UploadStatus)


def test_a_task_in_each_state_has_its_instance_in_the_matching_one() -> None:
    """A task's transition is allowed for its instance too (the instance follows it)."""
    for old, new in EXPECTED["sync_task"][2]:
        if "canceled" in (old, new):
            continue  # the canceled task's unfinished instance row is removed, made again on retry
        assert instance.TRANSITIONS.allowed(
            sync_task.INSTANCE[sync_task.SyncTaskStatus(old)],
            sync_task.INSTANCE[sync_task.SyncTaskStatus(new)],
        ), (old, new)


def test_the_api_names_of_the_statuses_are_the_enums_values() -> None:
    """The API's Literal types (inline enums in the OpenAPI document) list the same values."""
    assert set(get_args(sync_task.SyncTaskStatusName)) == set(sync_task.SyncTaskStatus)
    assert set(get_args(template.TemplateStatusName)) == set(template.TemplateStatus)
    assert set(get_args(deletion.UnfinishedName)) == set(deletion.UNFINISHED)
    assert set(get_args(clone.CloneStatusName)) == set(clone.CloneStatus)


def test_active_and_running_groups() -> None:
    assert set(sync_task.ACTIVE) == {"pending", "syncing", "importing"}
    assert set(sync_task.RUNNING) == {"syncing", "importing"}
    assert set(upload.IMPORT_QUEUE) == {"uploaded", "importing"}
    assert set(template.VISIBLE) == {"active", "deleting"}
    assert set(clone.ACTIVE) == {"pending", "waiting_for_sync", "cloning"}
