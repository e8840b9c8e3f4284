"""Every listener of a running stack speaks TLS where it should, with certificates checked:
the agents serve HTTPS only, the coordinator HTTPS (and plain HTTP on loopback only because
the stack asks for it, for the guide's examples)."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from demo.stack import Stack
from shared.version import VERSION
from tests.support.api import Api


def _plain_http_get(url: str) -> int:
    """GET over plain HTTP to the host and port of ``url``: the status, if an answer comes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def _untrusting_get(url: str) -> None:
    """GET with the system's trust store only, which knows nothing of the cluster CA."""
    with urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context()):
        pass


def test_agents_serve_https_only(stack: Stack) -> None:
    for node in stack.node_names():
        url = stack.agent_url(node)
        assert url.startswith("https://")
        with urllib.request.urlopen(url + "/health", timeout=10, context=stack.client_tls()) as resp:
            assert resp.status == 200
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _plain_http_get(url)  # no HTTP answer: the listener speaks TLS only


def test_a_client_that_does_not_trust_the_cluster_ca_is_refused(stack: Stack) -> None:
    for url in (stack.agent_url("pve-node1") + "/health", stack.coordinator_https_url + "/healthz"):
        with pytest.raises(urllib.error.URLError, match="certificate verify failed"):
            _untrusting_get(url)


def _agent_api(stack: Stack, node: str) -> Api:
    """The coordinator's agent API as ``node``'s agent calls it: over HTTPS."""
    return Api(stack.coordinator_https_url + "/agent-api/v1", stack.agent_credential(node), stack.ca_file)


def test_the_api_and_the_agent_api_are_served_over_https(stack: Stack) -> None:
    api = Api(stack.coordinator_https_url + "/api/v1", stack.admin_token, stack.ca_file)
    assert "pve-demo" in [c["cluster_name"] for c in api.all("/clusters")]
    assert _agent_api(stack, "pve-node1").get("/whoami").ok()["node_name"] == "pve-node1"


def test_agents_register_with_https_urls_only(stack: Stack) -> None:
    agent_api = _agent_api(stack, "pve-node1")
    hello = {
        "node_name": "pve-node1",
        "cluster_name": "pve-demo",
        "url": f"http://127.0.0.1:{stack.agent_port('pve-node1')}",
        "version": VERSION,  # an agent of another version may be refused (shared/version.py)
        "started_at": "2026-01-01T00:00:00Z",
        "pve_ok": True,
        "staging_free_bytes": 1,
    }
    refused = agent_api.post("/register", json=hello)
    assert refused.status == 400 and "url" in refused.message, refused.body
