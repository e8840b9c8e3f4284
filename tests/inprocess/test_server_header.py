"""Every answer says ``Server: pvesphere-coordinator`` (or ``pvesphere-agent``) and no
more: not aiohttp's ``Python/3.11 aiohttp/3.x``, which names the versions to attack."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.staging import Staging
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.routes import plain_data_app
from agent.transfer.send import RateLimit, Sender
from shared import server_header
from tests.support.inprocess import InProcess


def test_every_coordinator_answer_names_the_product_alone(coordinator_sqlite: InProcess) -> None:
    api = coordinator_sqlite.api
    answers = {
        "ok": api.get("/clusters"),
        "no route": api.get("/nope"),
        "no token": api.as_token(None).get("/clusters"),
        "bad input": api.get("/templates?page=0"),
        "bad event filter": api.get("/events?kind=bogus"),
    }
    assert [a.status for a in answers.values()] == [200, 404, 401, 400, 400]
    for what, reply in answers.items():
        assert reply.headers["Server"] == server_header.COORDINATOR, what
    for path, status in [
        ("/healthz", 200),
        ("/metrics", 200),
        ("/ui/", 200),
        ("/ui/tasks.js", 200),
        ("/ui/missing.js", 404),
        ("/ui", 308),
    ]:
        answer = requests.get(coordinator_sqlite.url + path, timeout=10, allow_redirects=False)
        assert (answer.status_code, answer.headers["Server"]) == (status, server_header.COORDINATOR), path


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/v1/receives/1/data", 409), ("GET", "/v1/receives/1/data", 405), ("GET", "/x", 404)],
)
async def test_the_agents_answers_name_the_agent_alone(
    tmp_path: Path, method: str, path: str, status: int
) -> None:
    """The agent's plain data plane (wired as its HTTPS app is, agent/server.py)."""
    sender = Sender(_no_relay, RateLimit(0), ssl.create_default_context(), PeerPolicy())
    receives = Receives(Staging(tmp_path / "staging"), "pve-node2", PeerPolicy(), sender)
    app: web.Application = plain_data_app(receives)
    async with TestClient(TestServer(app)) as client:
        reply = await client.request(method, path, data=b"")
        assert (reply.status, reply.headers["Server"]) == (status, server_header.AGENT)


async def _no_relay(_task: int, _uid: str, _epoch: int) -> str:
    raise AssertionError("no relay here")
