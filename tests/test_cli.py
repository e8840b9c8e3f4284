"""Every command answers --help; misuse gets one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    env = {"PVESPHERE_DATA_DIR": str(tmp_path), "PVESPHERE_PORT": "0"}
    result = run("coordinator.cli", "serve", env=env)
    assert result.returncode == 2
    assert "run `pvesphere-coordinator migrate` first" in result.stderr
    assert "Traceback" not in result.stderr


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


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    env = {"PVESPHERE_DATA_DIR": str(tmp_path), "PVESPHERE_PORT": "eighty"}
    result = run("coordinator.cli", "migrate", env=env)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "PVESPHERE_PORT" in result.stderr
