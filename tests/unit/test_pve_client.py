"""Talking to PVE: every failure, and every answer PVE should not give, is a named PveError."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from proxmoxer import ResourceException

from coordinator.inventory.pve_client import PveClient, PveError


class FakeApi:
    """Stands in for proxmoxer: answers each path from a table (an exception is raised)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def __call__(self, path: str) -> FakeApi:
        self.path = path
        return self

    def get(self, **_: object) -> Any:
        answer = self.answers[self.path]
        if isinstance(answer, BaseException):
            raise answer
        return answer


GOOD = {
    "version": {"version": "9.0.3", "release": "9.0"},
    "cluster/status": [
        {"type": "cluster", "name": "lab"},
        {"type": "node", "name": "n1", "ip": "10.0.0.1"},
    ],
    "nodes": [{"node": "n1", "status": "online"}],
    "nodes/n1/storage": [
        {"storage": "local", "type": "dir", "content": "images", "shared": 0, "active": 1, "total": 5}
    ],
}


def client(answers: dict[str, Any]) -> PveClient:
    c = PveClient("https://127.0.0.1:9", "root@pam!x", "4d1c5b8e-0a4f-4f5e-9d7a-2b1c3d4e5f60", False, 1)
    c._api = FakeApi(answers)
    return c


def test_a_good_answer_is_read() -> None:
    snap = client(GOOD).snapshot()
    assert (snap.cluster_name, snap.pve_version) == ("lab", "9.0.3")
    assert snap.nodes[0].ip_address == "10.0.0.1"
    storage = snap.storages[0]
    assert (storage.shared, storage.active, storage.enabled, storage.total, storage.used) == (
        False,
        True,
        True,
        5,
        0,
    )


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (requests.exceptions.ConnectTimeout("timed out"), "timeout"),
        (requests.exceptions.ReadTimeout("read timed out"), "timeout"),
        (requests.exceptions.ConnectionError("Connection refused"), "unreachable"),
        (requests.exceptions.SSLError("certificate verify failed"), "tls"),
        (ResourceException(401, "Unauthorized", ""), "auth"),
        (ResourceException(403, "Forbidden", ""), "auth"),
        (ResourceException(500, "Internal Server Error", ""), "api"),
        (requests.exceptions.InvalidURL("bad"), "api"),
        (requests.exceptions.ChunkedEncodingError("broken"), "api"),
        # what http.client raises for a header outside Latin-1
        (UnicodeEncodeError("latin-1", "\u20ac", 0, 1, "ordinal not in range(256)"), "invalid"),
    ],
)
def test_each_failure_is_named(failure: BaseException, kind: str) -> None:
    with pytest.raises(PveError) as caught:
        client({**GOOD, "version": failure}).snapshot()
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("version", {"errors": b"<html>not JSON</html>"}),  # proxmoxer's answer to a non-JSON body
        ("version", None),
        ("cluster/status", {"data": "not a list"}),
        ("nodes", [{"status": "online"}]),
        ("nodes", [{"node": "n" * 101}]),
        ("nodes/n1/storage", [{"storage": "local", "total": "lots"}]),
    ],
)
def test_an_answer_pve_should_not_give_is_an_api_error(path: str, answer: Any) -> None:
    with pytest.raises(PveError) as caught:
        client({**GOOD, path: answer}).snapshot()
    assert caught.value.kind == "api"
    assert path in caught.value.message


def test_settings_that_were_saved_before_the_checks_are_an_error_not_a_crash() -> None:
    with pytest.raises(PveError) as caught:
        PveClient("https://pve1\x00:8006", "root@pam!x", "not-a-uuid", False, 1)
    assert caught.value.kind == "invalid" and "control characters" in caught.value.message
