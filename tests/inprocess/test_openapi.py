"""The OpenAPI document describes every route, and real responses match it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from shared.validation import INT_MAX
from tests.support.api import Api
from tests.support.inprocess import InProcess

EXPECTED = {
    ("get", "/api/v1/clusters"),
    ("post", "/api/v1/clusters"),
    ("get", "/api/v1/clusters/{id}"),
    ("put", "/api/v1/clusters/{id}"),
    ("post", "/api/v1/clusters/{id}/refresh"),
    ("get", "/api/v1/nodes"),
    ("get", "/api/v1/nodes/{id}"),
    ("get", "/api/v1/storages"),
    ("get", "/api/v1/storages/{id}"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}"),
    ("get", "/api/v1/templates"),
    ("get", "/api/v1/templates/{id}"),
    ("put", "/api/v1/templates/{id}"),
    ("delete", "/api/v1/templates/{id}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/templates/sync-tasks/ws"),
    ("post", "/api/v1/events/ticket"),
    ("options", "/api/v1/uploads"),
    ("post", "/api/v1/uploads"),
    ("head", "/api/v1/uploads/{id}"),
    ("patch", "/api/v1/uploads/{id}"),
    ("delete", "/api/v1/uploads/{id}"),
}


def _doc(api: Api) -> dict[str, Any]:
    """The OpenAPI document of the coordinator ``api`` calls, with its token (it needs one)."""
    reply = api.get("/openapi.json")
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


def _check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    pointer = path.replace("~", "~0").replace("/", "~1")
    ref = f"#/paths/{pointer}/{method}/responses/{status}/content/application~1json/schema"
    schema = {**doc, "$ref": ref}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_document_lists_every_route(coordinator: InProcess) -> None:
    doc = _doc(coordinator.api)
    assert doc["openapi"].startswith("3.1")
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert EXPECTED <= found
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            # a WebSocket answers 101 (its messages' schema there), a tus route 200, 201 or 204
            # with headers, every other route 200
            success = {"101", "200", "201", "204"} if path.startswith("/api/v1/uploads") else {"101", "200"}
            assert success & set(op["responses"]), (method, path)
            if op.get("security") != []:
                assert {"401", "403"} <= set(op["responses"]), (method, path)


@pytest.mark.mariadb
def test_real_responses_match_the_document(coordinator: InProcess, api: Api) -> None:
    doc = _doc(coordinator.api)
    for path, real in [
        ("/api/v1/clusters", "/clusters"),
        ("/api/v1/clusters/{id}", f"/clusters/{coordinator.cluster_id}"),
        ("/api/v1/nodes", "/nodes"),
        ("/api/v1/storages", "/storages?page_size=100"),
        ("/api/v1/agents", "/agents"),
        ("/api/v1/templates", "/templates"),
    ]:
        reply = api.get(real)
        assert reply.status == 200
        _check(doc, "get", path, 200, reply.body)
    for path, real, status in [
        ("/api/v1/templates/{id}", "/templates/987654", 404),
        ("/api/v1/clusters", "/clusters?page_size=0", 400),
    ]:
        reply = api.get(real)
        assert reply.status == status
        _check(doc, "get", path, status, reply.body)


def test_a_wrong_response_would_fail_the_check(coordinator: InProcess, api: Api) -> None:
    """Guard against a check that cannot fail: a mangled body must be rejected."""
    doc = _doc(coordinator.api)
    body = api.get("/clusters").body
    body["data"]["list"] = [{"id": "one"}]
    try:
        _check(doc, "get", "/api/v1/clusters", 200, body)
    except jsonschema.ValidationError:
        return
    raise AssertionError("schema accepted a malformed cluster")


def _integers(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every integer schema in ``node`` (not following $refs), with where it is."""
    found = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            found.append((where, node))
        for key, value in node.items():
            found += _integers(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _integers(value, f"{where}[{i}]")
    return found


def test_every_integer_a_request_carries_is_bounded(coordinator: InProcess) -> None:
    """Clients (and fuzzers) read the bound from the document: ids 1..2^53-1, any integer within ±that."""
    doc = _doc(coordinator.api)
    request_side = [
        (f"{method} {path}", part)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        for part in (op.get("parameters", []), op.get("requestBody", {}))
    ]
    request_side += [
        (name, doc["components"]["schemas"][ref.rpartition("/")[2]])
        for name, part in list(request_side)
        for _, ref in _refs(part)
    ]
    integers = [found for name, part in request_side for found in _integers(part, name)]
    assert len(integers) > 20
    for where, schema in integers:
        assert -INT_MAX <= schema["minimum"] and schema["maximum"] <= INT_MAX, where
    path_ids = [p for ops in doc["paths"].values() for op in ops.values() for p in op.get("parameters", [])]
    assert all(p["schema"]["minimum"] == 1 for p in path_ids if p["in"] == "path")


def _refs(node: Any) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        own = [("", node["$ref"])] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []
