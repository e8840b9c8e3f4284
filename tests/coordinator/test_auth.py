"""Bearer tokens and roles: 401 without a valid token, 403 without the role."""

from __future__ import annotations

import pytest

from demo.stack import Stack
from tests.support.api import Api


def test_no_token_is_401_with_the_envelope(stack: Stack) -> None:
    reply = Api(stack.api, None).get("/clusters")
    assert reply.status == 401
    assert reply.body == {
        "code": 401,
        "message": "missing Authorization: Bearer <token> header",
        "data": {"error": "unauthorized"},
    }
    resp = Api(stack.api, None).http.get(stack.api + "/clusters")
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_or_malformed_token_is_401(stack: Stack) -> None:
    for header in ("Bearer pvst_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "):
        reply = Api(stack.api, None).get("/templates", headers={"Authorization": header})
        assert reply.status == 401, header
        assert reply.error == "unauthorized"


def test_viewer_reads_but_cannot_change(stack: Stack, make_token) -> None:  # type: ignore[no-untyped-def]
    viewer = Api(stack.api, make_token("viewer"))
    assert viewer.get("/clusters").status == 200
    assert viewer.get("/storages").status == 200
    reply = viewer.post("/clusters", json={"api_url": "https://x", "token_id": "a@b!c", "token_secret": "s"})
    assert reply.status == 403
    assert reply.error == "forbidden"
    assert "role viewer" in reply.message and "admin" in reply.message
    assert viewer.put("/templates/1", json={"description": "x"}).status == 403
    assert viewer.delete("/templates/1").status == 403
    assert viewer.post(f"/clusters/{stack.cluster_id}/refresh").status == 403


def test_operator_cannot_register_clusters(stack: Stack, make_token) -> None:  # type: ignore[no-untyped-def]
    operator = Api(stack.api, make_token("operator"))
    reply = operator.post(
        "/clusters", json={"api_url": "https://x", "token_id": "a@b!c", "token_secret": "s"}
    )
    assert reply.status == 403
    assert operator.post(f"/clusters/{stack.cluster_id}/refresh").status == 200


@pytest.mark.mariadb
def test_revoked_token_stops_working(stack: Stack) -> None:
    created = stack.coordinator_cli("token", "create", "--name", "leaving-soon", "--role", "admin")
    api = Api(stack.api, created.stdout.strip())
    assert api.get("/clusters").status == 200
    stack.coordinator_cli("token", "revoke", "leaving-soon")
    reply = api.get("/clusters")
    assert reply.status == 401 and reply.message == "invalid or revoked API token"


def test_health_and_openapi_need_no_token(stack: Stack) -> None:
    anon = Api(stack.coordinator_url, None)
    assert anon.get("/healthz").status == 200
    assert anon.get("/readyz").status == 200
    assert anon.get("/api/v1/openapi.json").status == 200
