"""Every command answers --help; misuse gets one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.db.sqlite_lock import hold_sqlite
from demo.stack import free_port
from pvesim.tls import ensure_certificates

COMMANDS = [
    ["coordinator.cli"],
    ["coordinator.cli", "serve"],
    ["coordinator.cli", "migrate"],
    ["coordinator.cli", "token"],
    ["coordinator.cli", "token", "create"],
    ["coordinator.cli", "token", "list"],
    ["coordinator.cli", "token", "revoke"],
    ["coordinator.cli", "agent"],
    ["coordinator.cli", "agent", "enroll"],
    ["coordinator.cli", "agent", "list"],
    ["coordinator.cli", "agent", "revoke"],
    ["agent.cli"],
    ["agent.cli", "serve"],
    ["agent.cli", "check"],
    ["pvesim.cli"],
    ["pvesim.cli", "serve"],
    ["demo"],
]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert len(result.stdout.splitlines()) >= 3


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    ca, _, _ = ensure_certificates(tmp_path, "pve-test")
    env = {
        "PVESPHERE_DATA_DIR": str(tmp_path / "data"),
        "PVESPHERE_PLAIN_HTTP_PORT": str(free_port()),
        "PVESPHERE_AGENT_CA_FILE": str(ca),
    }
    result = run("coordinator.cli", "serve", env=env)
    assert result.returncode == 2
    assert "run `pvesphere-coordinator migrate` first" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_sqlite_database_another_coordinator_serves(tmp_path: Path) -> None:
    ca, _, _ = ensure_certificates(tmp_path, "pve-test")
    data = tmp_path / "data"
    env = {
        "PVESPHERE_DATA_DIR": str(data),
        "PVESPHERE_PLAIN_HTTP_PORT": str(free_port()),
        "PVESPHERE_AGENT_CA_FILE": str(ca),
    }
    first = hold_sqlite(f"sqlite+aiosqlite:///{data / 'coordinator.db'}")  # as a serving coordinator does
    assert first is not None
    try:
        result = run("coordinator.cli", "serve", env=env)
    finally:
        first.close()
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"pvesphere-coordinator: another coordinator process serves the SQLite database "
        f"{data / 'coordinator.db'}: SQLite is for one coordinator; replicas share a MySQL/MariaDB "
        "database (database_url)"
    )


def test_token_lifecycle_on_the_command_line(tmp_path: Path) -> None:
    env = {"PVESPHERE_DATA_DIR": str(tmp_path)}
    assert run("coordinator.cli", "migrate", env=env).returncode == 0
    created = run("coordinator.cli", "token", "create", "--name", "ops", "--role", "operator", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("pvst_")
    again = run("coordinator.cli", "token", "create", "--name", "ops", "--role", "viewer", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = run("coordinator.cli", "token", "list", env=env)
    assert "ops" in listed.stdout and "operator" in listed.stdout and "active" in listed.stdout
    assert created.stdout.strip() not in listed.stdout  # secrets are never listed
    revoked = run("coordinator.cli", "token", "revoke", "ops", env=env)
    assert revoked.returncode == 0
    assert "revoked" in run("coordinator.cli", "token", "list", env=env).stdout
    missing = run("coordinator.cli", "token", "revoke", "nobody", env=env)
    assert missing.returncode == 1 and "no token named" in missing.stderr


def test_serve_refuses_to_start_with_nothing_to_listen_on(tmp_path: Path) -> None:
    result = run("coordinator.cli", "serve", env={"PVESPHERE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "pvesphere-coordinator: configuration error: nothing to listen on: set tls_cert_file and "
        "tls_key_file (HTTPS on port 8443), or plain_http_port for plain HTTP on 127.0.0.1 only"
    )


def test_serve_names_a_missing_certificate(tmp_path: Path) -> None:
    env = {
        "PVESPHERE_DATA_DIR": str(tmp_path),
        "PVESPHERE_TLS_CERT_FILE": str(tmp_path / "coordinator.pem"),
        "PVESPHERE_TLS_KEY_FILE": str(tmp_path / "coordinator.key"),
    }
    result = run("coordinator.cli", "serve", env=env)
    assert result.returncode == 2
    assert f"configuration error: tls_cert_file {tmp_path}/coordinator.pem does not exist" in result.stderr


def test_serve_needs_the_ca_that_checks_agents(tmp_path: Path) -> None:
    env = {"PVESPHERE_DATA_DIR": str(tmp_path), "PVESPHERE_PLAIN_HTTP_PORT": str(free_port())}
    result = run("coordinator.cli", "serve", env=env)
    assert result.returncode == 2
    assert "configuration error: agent_ca_file is not set" in result.stderr


def test_agent_names_a_missing_certificate_before_it_enrols(tmp_path: Path) -> None:
    env = {
        "PVESPHERE_AGENT_COORDINATOR_URL": "https://coordinator.invalid:8443",
        "PVESPHERE_AGENT_JOIN_TOKEN": "pvsj_unused",
        "PVESPHERE_AGENT_CREDENTIAL_FILE": str(tmp_path / "credential"),
        "PVESPHERE_AGENT_TLS_CERT_FILE": str(tmp_path / "pve-ssl.pem"),
    }
    result = run("agent.cli", "serve", "--node", "pve1", env=env)
    assert result.returncode == 2
    assert f"configuration error: tls_cert_file {tmp_path}/pve-ssl.pem does not exist" in result.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    env = {"PVESPHERE_DATA_DIR": str(tmp_path), "PVESPHERE_PORT": "eighty"}
    result = run("coordinator.cli", "migrate", env=env)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "PVESPHERE_PORT" in result.stderr
