"""The dashboard's Content-Security-Policy (coordinator/ui/headers.py)."""

from __future__ import annotations

import pytest

from coordinator.ui.headers import content_security_policy


def directives(policy: str) -> dict[str, str]:
    return dict(part.split(" ", 1) for part in policy.split("; "))


@pytest.mark.parametrize(
    "host", ["pve-admin.example.org:8443", "10.0.0.5:8080", "[fd00::5]:8443", "localhost"]
)
def test_the_websocket_of_the_page_host_is_allowed_and_nothing_else(host: str) -> None:
    policy = directives(content_security_policy(host))
    assert policy["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in content_security_policy(host)


@pytest.mark.parametrize(
    "host", ["evil.example; script-src *", "a b", "", "host:8080/path", "x'y", "*.example.org", "[::1"]
)
def test_a_host_header_that_is_not_a_plain_host_adds_nothing(host: str) -> None:
    policy = content_security_policy(host)
    assert directives(policy)["connect-src"] == "'self'"
    assert len(policy.split("; ")) == 8
