"""The coordinator's exceptions: one base for all (issue 12), no two classes of one name,
and each domain refusal answered with its HTTP status by the one mapping in the API."""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

import pytest

import coordinator
from coordinator.api.errors import HTTP_STATUS, from_refusal
from coordinator.errors import (
    Conflict,
    CoordinatorError,
    Forbidden,
    Invalid,
    NotFound,
    Refusal,
    Unauthorized,
    Unavailable,
    not_found,
)
from shared.error_slugs import ErrorSlug


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(coordinator.__path__, "coordinator."):
        if ".migrations" in info.name:
            continue  # Alembic's scripts, loaded by Alembic
        module = importlib.import_module(info.name)
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name
        ]
    return found


def test_every_coordinator_exception_derives_from_the_one_base() -> None:
    classes = _exception_classes()
    assert len(classes) > 15  # the walk found them
    assert [c.__qualname__ for c in classes if not issubclass(c, CoordinatorError)] == []


def test_no_two_coordinator_exceptions_share_a_name() -> None:
    names = Counter(c.__name__.lstrip("_") for c in _exception_classes())
    assert [name for name, n in names.items() if n > 1] == []


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (Invalid(ErrorSlug.STORAGE_DISABLED, "storage 'x' is disabled in PVE"), 400),
        (Unauthorized(ErrorSlug.JOIN_TOKEN_EXPIRED, "the join token for node n1 has expired"), 401),
        (Forbidden(ErrorSlug.WRONG_NODE, "this join token is for node n1, not for node n2"), 403),
        (not_found(ErrorSlug.SYNC_TASK_NOT_FOUND, 7), 404),
        (Conflict(ErrorSlug.TEMPLATE_DELETING, "template 3 is being deleted"), 409),
        (Unavailable(ErrorSlug.NO_LIVE_AGENT, "no live agent on node pve-node1"), 503),
    ],
)
def test_a_refusal_is_answered_with_its_status_slug_and_message(refusal: Refusal, status: int) -> None:
    answer = from_refusal(refusal)
    assert (answer.status, answer.error, answer.message) == (status, refusal.error, refusal.message)


def test_every_kind_of_refusal_has_a_status() -> None:
    assert set(HTTP_STATUS) == {Invalid, Unauthorized, Forbidden, NotFound, Conflict, Unavailable}
    assert not_found(ErrorSlug.SYNC_TASK_NOT_FOUND, 7).message == "sync task 7 not found"
    assert not_found(ErrorSlug.SYNC_TASK_NOT_FOUND, 7).error == "sync_task_not_found"
