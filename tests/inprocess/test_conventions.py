"""Section 1 of the contract: envelopes, status codes, pagination, bad input."""

from __future__ import annotations

import pytest

from tests.support.api import Api


@pytest.mark.parametrize(
    ("query", "field", "text"),
    [
        ("page_size=0", "page_size", "must be >= 1"),
        ("page_size=101", "page_size", "must be <= 100"),
        ("page=0", "page", "must be >= 1"),
        ("page=abc", "page", "must be an integer"),
        ("page_size=", "page_size", "must be an integer"),
        ("colour=blue", "colour", "is not a known parameter"),
    ],
)
def test_bad_pagination_is_a_400_naming_the_parameter(api: Api, query: str, field: str, text: str) -> None:
    for path in ("/clusters", "/nodes", "/storages", "/agents", "/templates"):
        reply = api.get(f"{path}?{query}")
        assert reply.status == 400, (path, reply.body)
        assert reply.body["code"] == 400
        assert reply.error == "invalid_request"
        assert field in reply.message and text in reply.message
        assert reply.data["fields"][field].startswith(text)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/templates/1"),
        ("GET", "/templates/sync-tasks/1"),
        ("POST", "/templates/1/versions/1/activate"),
    ],
)
def test_a_route_without_parameters_names_each_one_it_was_given(api: Api, method: str, path: str) -> None:
    reply = api.request(method, f"{path}?colour=blue&size=9")
    assert reply.status == 400 and reply.error == "invalid_request", reply.body
    assert reply.data["fields"] == {"colour": "is not a known parameter", "size": "is not a known parameter"}
    assert "colour is not a known parameter" in reply.message


@pytest.mark.parametrize(
    "path", ["/templates?page=1&page=2", "/templates/1?page=1&page=1", "/clones?page=1&page=2"]
)
def test_a_parameter_given_twice_is_a_400_naming_it(api: Api, path: str) -> None:
    reply = api.get(path)
    assert reply.status == 400 and reply.error == "invalid_request", reply.body
    assert reply.data["fields"] == {"page": "is given more than once"}
    assert "page given more than once" in reply.message


@pytest.mark.mariadb
def test_pagination_pages_newest_first(api: Api) -> None:
    everything = api.all("/storages")
    assert len(everything) >= 12
    ids = [s["id"] for s in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    first = api.get("/storages?page=1&page_size=5").ok()
    second = api.get("/storages?page=2&page_size=5").ok()
    assert first["total"] == second["total"] == len(everything)
    assert (first["page"], first["page_size"]) == (1, 5)
    assert [s["id"] for s in first["list"]] == ids[:5]
    assert [s["id"] for s in second["list"]] == ids[5:10]
    beyond = api.get("/storages?page=999&page_size=100").ok()
    assert beyond["list"] == [] and beyond["total"] == len(everything)
    default = api.get("/storages").ok()
    assert (default["page"], default["page_size"], len(default["list"])) == (1, 10, 10)


def test_empty_lists_are_lists_not_null(api: Api) -> None:
    data = api.get("/templates?name=no-such-template-name").ok()
    assert data == {"total": 0, "page": 1, "page_size": 10, "list": []}


@pytest.mark.parametrize("kind", ["clusters", "nodes", "storages", "templates", "agents"])
def test_unknown_ids_are_404_with_a_slug(api: Api, kind: str) -> None:
    reply = api.get(f"/{kind}/987654")
    singular = kind.rstrip("s")
    assert reply.status == 404
    assert reply.body == {
        "code": 404,
        "message": f"{singular} 987654 not found",
        "data": {"error": f"{singular}_not_found"},
    }


@pytest.mark.parametrize("ident", ["abc", "0", "-3", "1.5"])
def test_non_numeric_ids_are_400(api: Api, ident: str) -> None:
    reply = api.get(f"/templates/{ident}")
    assert reply.status == 400
    assert "id must be a positive integer" in reply.message


def test_malformed_json_body(api: Api) -> None:
    reply = api.post("/clusters", data=b'{"api_url": ', headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.error == "invalid_json"
    assert reply.message.startswith("request body is not valid JSON")
    reply = api.post("/clusters", json=[1, 2])
    assert reply.status == 400 and "must be a JSON object" in reply.message


def test_missing_and_ill_typed_fields_are_named(api: Api) -> None:
    reply = api.post("/clusters", json={"api_url": "https://pve:8006", "verify_ssl": "maybe"})
    assert reply.status == 400
    fields = reply.data["fields"]
    assert fields["token_id"] == "is required"
    assert fields["token_secret"] == "is required"
    assert fields["verify_ssl"].startswith("must be true or false")


def test_unknown_route_and_method(api: Api) -> None:
    reply = api.get("/no/such/thing")
    assert reply.status == 404 and reply.error == "route_not_found"
    reply = api.request("PATCH", "/clusters")
    assert reply.status == 405 and reply.error == "method_not_allowed"
    assert "GET" in reply.message and "POST" in reply.message
