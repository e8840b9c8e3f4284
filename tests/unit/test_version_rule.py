"""Which agent versions work with which coordinator (shared/version.py): same major, at most
one minor apart (before 1.0: the same minor), whatever the patch level or local suffix."""

from __future__ import annotations

import pytest

from shared.version import incompatible, major_minor


@pytest.mark.parametrize(
    ("agent", "coordinator"),
    [
        ("1.4.0", "1.4.0"),
        ("1.5.2", "1.4.0"),
        ("1.3.9", "1.4.1"),
        ("1.4.0rc1", "1.4.0"),
        ("1.4", "1.4.0+local"),
        ("0.2.3", "0.2.0"),
    ],
)
def test_versions_one_minor_apart_work_together(agent: str, coordinator: str) -> None:
    assert incompatible(agent, coordinator) is None


@pytest.mark.parametrize(
    ("agent", "coordinator"),
    [
        ("1.6.0", "1.4.0"),
        ("1.2.9", "1.4.0"),
        ("2.4.0", "1.4.0"),
        ("0.4.0", "1.4.0"),
        ("0.1.9", "0.2.0"),
        ("0.3.0", "0.2.0"),
    ],
)
def test_versions_further_apart_are_refused_naming_both(agent: str, coordinator: str) -> None:
    reason = incompatible(agent, coordinator)
    assert reason is not None and agent in reason and coordinator in reason


def test_a_version_that_is_none_is_refused_unless_it_is_the_coordinators_own() -> None:
    assert major_minor("latest") is None
    assert "latest" in str(incompatible("latest", "1.4.0"))
    assert incompatible("1.4.0", "unknown") is None  # a coordinator that does not know its version
