"""Agents register, heartbeat, are shown live, and are marked not live once killed."""

from __future__ import annotations

import re
import signal
import time

import pytest
import requests

from demo.stack import Stack
from shared.version import VERSION
from tests.support.api import Api


def _agents(api: Api) -> dict[str, dict]:
    return {a["node_name"]: a for a in api.all("/agents") if a["cluster_name"] == "pve-demo"}


@pytest.mark.mariadb
def test_every_node_has_a_live_agent(stack: Stack, api: Api) -> None:
    agents = _agents(api)
    nodes = {n["node_name"]: n for n in api.all("/nodes", cluster_id=stack.cluster_id)}
    assert sorted(agents) == sorted(nodes)
    for name, agent in agents.items():
        assert agent["live"] is True
        assert agent["node_id"] == nodes[name]["id"]
        assert agent["cluster_id"] == stack.cluster_id
        assert agent["url"] == f"https://127.0.0.1:{stack.agent_port(name)}"
        assert agent["version"] == VERSION
        assert agent["pve_ok"] is True and agent["pve_error"] is None
        assert agent["staging_free_bytes"] > 0
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", agent["last_heartbeat_at"])
        assert nodes[name]["agent_live"] is True
    assert api.get(f"/agents/{agents['pve-node1']['id']}").ok() == agents["pve-node1"] | {
        "last_heartbeat_at": api.get(f"/agents/{agents['pve-node1']['id']}").ok()["last_heartbeat_at"]
    }


def test_killed_agent_is_not_live_within_30s_and_comes_back(stack: Stack, api: Api) -> None:
    node = "pve-node3"
    before = _agents(api)[node]
    proc = stack.agents[node]
    proc.signal(signal.SIGKILL)  # no goodbye: the coordinator must notice the silence
    proc.stop()
    killed_at = time.monotonic()
    while True:
        agent = _agents(api)[node]
        if not agent["live"]:
            break
        assert time.monotonic() - killed_at < 30, "agent still shown live 30 s after kill -9"
        time.sleep(0.5)
    assert time.monotonic() - killed_at <= 30
    assert api.get(f"/agents?live=false&cluster_id={stack.cluster_id}").ok()["total"] >= 1
    node_row = next(n for n in api.all("/nodes", cluster_id=stack.cluster_id) if n["node_name"] == node)
    assert node_row["agent_live"] is False
    ready = requests.get(stack.coordinator_url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert f"no live agent on {node}" in " ".join(ready.json()["problems"])

    stack.start_agent(node)
    deadline = time.monotonic() + 20
    while not _agents(api)[node]["live"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    after = _agents(api)[node]
    assert after["id"] == before["id"]  # the restarted agent keeps its row
    stack.wait_ready(30)


def test_agent_refuses_callers_without_its_nodes_credential(stack: Stack) -> None:
    url = stack.agent_url("pve-node1")
    agent = Api(url, None, stack.ca_file)
    assert agent.get("/v1/whoami").status == 401
    for secret in ("nope", stack.agent_credential("pve-node2"), stack.admin_token):
        wrong = agent.as_token(secret).get("/v1/whoami")
        assert wrong.status == 401 and wrong.body["error"] == "unauthorized"
    right = agent.as_token(stack.agent_credential("pve-node1")).get("/v1/whoami")
    assert right.status == 200 and right.body["node"] == "pve-node1"
    unknown = agent.as_token(stack.agent_credential("pve-node1")).post("/v1/anything")
    assert unknown.status == 404


def test_agent_health_needs_no_credential(stack: Stack) -> None:
    for node in stack.node_names():
        health = requests.get(stack.agent_url(node) + "/health", timeout=10, verify=str(stack.ca_file)).json()
        assert health["node"] == node
        assert health["cluster"] == "pve-demo"
        assert health["version"] == VERSION
        assert health["uptime_seconds"] >= 0
        assert health["pve"]["ok"] is True and health["pve"]["version"].startswith("9.")
        assert health["staging"]["free_bytes"] > 0
        assert health["staging"]["dir"].endswith(f"{node}/staging")


def test_coordinator_refuses_agents_without_the_credential(stack: Stack) -> None:
    body = {
        "node_name": "intruder",
        "cluster_name": "pve-demo",
        "url": "https://evil:1",
        "version": VERSION,  # an agent of another version may be refused (shared/version.py)
        "started_at": "2025-01-01T00:00:00Z",
        "pve_ok": True,
        "staging_free_bytes": 1,
    }
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = requests.post(
            stack.coordinator_url + "/agent-api/v1/register", json=body, headers=headers, timeout=5
        )
        assert resp.status_code == 401
    # Nor does a user token count as the agent credential.
    resp = requests.post(
        stack.coordinator_url + "/agent-api/v1/register",
        json=body,
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=5,
    )
    assert resp.status_code == 401
