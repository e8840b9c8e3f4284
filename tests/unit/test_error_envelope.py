"""A bug in a handler: the client gets the envelope and a reference, the log gets the trace."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.exc import OperationalError

from coordinator.app import error_envelope


async def broken(_: web.Request) -> web.Response:
    raise KeyError("secret-internal-detail")


async def refused(_: web.Request) -> web.Response:
    raise web.HTTPUnsupportedMediaType(text="no such media type")


async def test_an_unexpected_exception_is_a_500_envelope_without_a_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application(middlewares=[error_envelope])
    app.router.add_get("/broken", broken)
    app.router.add_get("/refused", refused)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR):
            resp = await client.get("/broken")
            body = await resp.json()
        assert resp.status == 500 and resp.content_type == "application/json"
        assert body["code"] == 500 and body["data"] == {"error": "internal_error"}
        assert "secret-internal-detail" not in await resp.text() and "Traceback" not in await resp.text()
        ref = body["message"].split("ref ")[1].split(")")[0]
        record = next(r for r in caplog.records if ref in r.getMessage())
        assert record.exc_info is not None and "secret-internal-detail" in str(record.exc_info[1])

        resp = await client.get("/refused")
        assert resp.status == 415
        assert await resp.json() == {
            "code": 415,
            "message": "no such media type",
            "data": {"error": "http_error"},
        }


async def database_down(_: web.Request) -> web.Response:
    refused = ConnectionRefusedError("Can't connect to MySQL server on 'db:3306'")
    raise OperationalError("SELECT 1", {}, refused)


async def test_a_database_that_does_not_answer_is_a_503_naming_it() -> None:
    app = web.Application(middlewares=[error_envelope])
    app.router.add_get("/down", database_down)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/down")
        body = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert body["data"] == {"error": "database_unavailable"}
    assert "database does not answer" in body["message"]
    assert "db:3306" not in body["message"]  # where the database is stays in the log
