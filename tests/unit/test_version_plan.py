"""Which nodes a new version is rolled out to, and which versions keep_versions removes
(coordinator/version_plan.py)."""

from __future__ import annotations

from coordinator.version_plan import Held, VersionFacts, rollout_nodes, versions_to_prune


def test_every_other_node_holding_an_available_earlier_version_gets_the_new_one() -> None:
    held = [
        Held(node_id=1, version=1, available=True),  # the import node: it imports the new one
        Held(node_id=2, version=1, available=True),
        Held(node_id=3, version=2, available=True),
        Held(node_id=3, version=1, available=True),  # two versions there: one task all the same
        Held(node_id=4, version=1, available=False),  # a copy that failed: not a holder
        Held(node_id=5, version=2, available=False),  # a copy under way
        Held(node_id=6, version=3, available=True),  # already has the new version
    ]
    assert rollout_nodes(held, new_version=3, import_node_id=1) == [2, 3]


def test_a_template_only_on_its_import_node_rolls_out_nowhere() -> None:
    assert rollout_nodes([Held(1, 1, True)], new_version=2, import_node_id=1) == []
    assert rollout_nodes([], new_version=2, import_node_id=1) == []


def _versions(*pairs: tuple[int, str]) -> list[VersionFacts]:
    return [VersionFacts(v, s) for v, s in pairs]


def test_versions_older_than_the_newest_kept_imported_ones_go_oldest_first() -> None:
    five = _versions(*((v, "imported") for v in (1, 2, 3, 4, 5)))
    assert versions_to_prune(five, current=5, keep=3) == [1, 2]
    assert versions_to_prune(five, current=5, keep=5) == []
    assert versions_to_prune(five, current=5, keep=1) == [1, 2, 3, 4]


def test_the_current_version_is_never_removed_even_when_rolled_back_beyond_keep() -> None:
    five = _versions(*((v, "imported") for v in (1, 2, 3, 4, 5)))
    assert versions_to_prune(five, current=1, keep=2) == [2, 3]


def test_failed_versions_old_enough_go_and_unfinished_ones_stay() -> None:
    versions = _versions(
        (1, "imported"),
        (2, "failed"),  # older than the kept ones: goes
        (3, "deleting"),  # being removed already: not asked again
        (4, "imported"),
        (5, "failed"),  # newer than the oldest kept: stays (it counts for nothing)
        (6, "imported"),
        (7, "importing"),  # not imported yet: does not count among the kept, and stays
    )
    assert versions_to_prune(versions, current=6, keep=2) == [1, 2]


def test_nothing_goes_until_keep_versions_are_imported() -> None:
    versions = _versions((1, "imported"), (2, "failed"), (3, "failed"), (4, "imported"))
    assert versions_to_prune(versions, current=4, keep=2) == []
