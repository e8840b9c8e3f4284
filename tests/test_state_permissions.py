"""The coordinator's secrets are its own: data_dir 0700; database, keys and tokens 0600.

The SQLite database holds the PVE token secret of every registered cluster; the agent
credential key derives every node's agent credential.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator import state_permissions
from coordinator.config import CoordinatorConfig
from shared.config import ConfigError
from shared.private_files import replace_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def migrate(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "--config", str(config), "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_new_data_dir_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    config = tmp_path / "coordinator.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    old = os.umask(0o022)
    try:
        result = migrate(config)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert mode(data_dir) == 0o700
    for name in ("coordinator.db", "ticket-signing.key", "agent-credential.key"):
        assert mode(data_dir / name) == 0o600, name
    for side in data_dir.glob("coordinator.db-*"):
        assert mode(side) == 0o600, side.name


def test_an_existing_loose_data_dir_is_tightened_at_start_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    config = tmp_path / "coordinator.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    assert migrate(config).returncode == 0
    # As an older version (or a copy with cp -r) left them: readable by everybody.
    loose = [data_dir / "coordinator.db", data_dir / "ticket-signing.key", data_dir / "agent-credential.key"]
    for path in [data_dir, *loose]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    result = migrate(config)
    assert result.returncode == 0, result.stderr
    assert mode(data_dir) == 0o700
    assert [mode(p) for p in loose] == [0o600] * len(loose)
    assert f"made private: {data_dir / 'coordinator.db'} (0644 -> 0600)" in result.stderr


def test_what_cannot_be_made_private_stops_the_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o700)
    token = data_dir / "ticket-signing.key"
    token.write_text("secret\n")
    os.chmod(token, 0o640)

    def not_yours(path: object, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(state_permissions.os, "chmod", not_yours)
    with pytest.raises(ConfigError) as refused:
        state_permissions.secure(CoordinatorConfig(data_dir=data_dir))
    assert str(refused.value) == (
        f"{token} is open to other users (mode 0640) and cannot be made 0600: Operation not permitted; "
        "make it belong to the user the coordinator runs as, or chmod 0600 it"
    )


def test_a_data_dir_everybody_may_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(ConfigError, match="a directory everybody may write to"):
        state_permissions.secure(CoordinatorConfig(data_dir=shared))
    assert mode(shared) == 0o1777  # left as it was


def test_a_secret_file_is_written_private_even_over_a_loose_one(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    replace_private(path, b"pvst_new\n")
    assert (mode(path), path.read_text()) == (0o600, "pvst_new\n")
