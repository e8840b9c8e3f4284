"""A bad ``kind`` on the events WebSockets is a 400, before the upgrade, naming the kinds
that route serves (each route its own)."""

from __future__ import annotations

import pytest

from tests.support.events import refused, ws_url
from tests.support.inprocess import InProcess


@pytest.mark.parametrize(
    ("path", "kind", "named"),
    [
        ("/events", "bogus", "upload, sync_task, clone, version"),
        ("/events", "clone,bogus", "upload, sync_task, clone, version"),
        ("/templates/sync-tasks/ws", "bogus", "sync_task"),
        ("/templates/sync-tasks/ws", "upload", "sync_task"),
    ],
)
def test_an_unknown_kind_names_the_allowed_ones(
    coordinator_sqlite: InProcess, path: str, kind: str, named: str
) -> None:
    api = coordinator_sqlite.api
    status, body = refused(ws_url(api.base, path), token=api.token, params={"kind": kind})
    assert (status, body["data"]["error"]) == (400, "invalid_request"), body
    assert f"kind must be one or more of {named}, comma-separated" in body["message"]
    assert repr(kind) in body["message"] and "kind" in body["data"]["fields"]
