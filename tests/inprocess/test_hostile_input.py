"""Input a fuzzer found to cause 500s: each is now a 400 (or 413) that names what was wrong."""

from __future__ import annotations

import pytest

from shared.json_body import MAX_DEPTH
from shared.validation import INT_MAX
from tests.support.api import Api

HUGE = str(2**63)  # one past SQLite's largest integer: OverflowError when bound
LONG = "7" * 5000  # past Python's int-from-string limit: ValueError


@pytest.mark.parametrize("ident", [HUGE, str(INT_MAX + 1), LONG, "²", "١"])
@pytest.mark.mariadb
def test_an_id_out_of_bounds_in_the_path(api: Api, ident: str) -> None:
    for path in (f"/templates/{ident}", f"/clusters/{ident}", f"/templates/sync-tasks/{ident}"):
        reply = api.get(path)
        assert reply.status == 400, (path, reply.body)
        (text,) = reply.data["fields"].values()  # id or task_id
        assert "must be a positive integer" in text
        assert len(reply.message) < 200


@pytest.mark.parametrize("value", [HUGE, LONG, f"-{HUGE}"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/clusters", "page"),
        ("/templates", "page"),
        ("/templates", "cluster_id"),
        ("/storages", "node_id"),
        ("/agents", "cluster_id"),
        ("/templates/sync-tasks", "template_id"),
    ],
)
@pytest.mark.mariadb
def test_an_integer_out_of_bounds_in_the_query(api: Api, path: str, field: str, value: str) -> None:
    reply = api.get(path, params={field: value})
    assert reply.status == 400, reply.body
    assert reply.error == "invalid_request"
    assert field in reply.data["fields"]
    assert len(reply.message) < 300


@pytest.mark.mariadb
def test_the_last_page_within_bounds_is_an_empty_list(api: Api) -> None:
    data = api.get("/storages", params={"page": INT_MAX, "page_size": 100}).ok()
    assert data["list"] == [] and data["total"] > 0 and data["page"] == INT_MAX


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        (b'{"target_node_ids": [%s]}' % HUGE.encode(), "target_node_ids[0]", "must be between"),
        (b'{"target_node_ids": [2, %s]}' % LONG.encode(), "target_node_ids[1]", "number too long"),
        (b'{"target_node_ids": %s1%s}' % (b"[" * 10000, b"]" * 10000), "body", "nests deeper than 32"),
    ],
)
def test_hostile_numbers_and_nesting_in_a_body(api: Api, raw: bytes, field: str, text: str) -> None:
    reply = api.post("/templates/1/sync", data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert text in reply.data["fields"][field]
    assert len(reply.message) < 300


@pytest.mark.parametrize(
    ("path", "body", "field", "text"),
    [
        ("/templates/1/sync", {"target_node_ids": ["2"]}, "target_node_ids[0]", "must be an integer"),
        ("/templates/1/sync", {"target_node_ids": [2.0]}, "target_node_ids[0]", "must be an integer"),
        ("/templates/1/clone", {"node_id": "2", "name": "web-1"}, "node_id", "must be an integer"),
        ("/templates/1/clone", {"node_id": 2, "name": "web-1", "full": 1}, "full", "must be true or false"),
        (
            "/templates/1/clone",
            {"node_id": 2, "name": "web-1", "full": "true"},
            "full",
            "must be true or false",
        ),
    ],
)
def test_a_json_body_is_taken_as_typed(api: Api, path: str, body: object, field: str, text: str) -> None:
    """JSON says what a value is: "2" is a string, 1 a number; only a query's or a form's text
    converts. Taking them anyway would accept what the client never meant."""
    reply = api.post(path, json=body)
    assert (reply.status, reply.error) == (400, "invalid_request"), reply.body
    assert reply.data["fields"][field].startswith(text), reply.data


def test_nesting_up_to_the_limit_is_read(api: Api) -> None:
    """32 levels are decoded (and then refused for what they are, not for their depth)."""
    raw = b'{"target_node_ids": %s1%s}' % (b"[" * (MAX_DEPTH - 1), b"]" * (MAX_DEPTH - 1))
    reply = api.post("/templates/1/sync", data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.error == "invalid_request"
    assert "target_node_ids[0]" in reply.data["fields"]


def test_a_json_body_over_64_kib_is_a_413(api: Api) -> None:
    reply = api.put("/templates/1", json={"description": "x" * (65 << 10)})
    assert reply.status == 413 and reply.error == "too_large"


@pytest.mark.parametrize("text", ["a\x00b", "\x1b[2J", "\x7f"])
def test_control_characters_in_a_query(api: Api, text: str) -> None:
    reply = api.get("/templates", params={"name": text})
    assert reply.status == 400
    assert "control characters" in reply.data["fields"]["name"]


@pytest.mark.parametrize("token", ["\xff\xfe", "pvst_ü"])
def test_a_token_with_bytes_no_token_has_is_a_401(api: Api, token: str) -> None:
    """aiohttp hands such bytes on as surrogates, which hashing the token choked on (a 500)."""
    reply = api.get("/clusters", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 401 and reply.error == "unauthorized"
