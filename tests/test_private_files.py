"""The coordinator's secrets are its own: data_dir 0700; database, keys and tokens 0600.

The SQLite database holds the PVE token secret of every registered cluster.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator import private_files
from coordinator.config import CoordinatorConfig
from shared.config import ConfigError


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
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    config = tmp_path / "coordinator.toml"
    config.write_text(f'data_dir = "{data_dir}"\nagent_token_file = "{token}"\n')
    old = os.umask(0o022)
    try:
        result = migrate(config)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert mode(data_dir) == 0o700
    for name in ("coordinator.db", "ticket-signing.key"):
        assert mode(data_dir / name) == 0o600, name
    for side in data_dir.glob("coordinator.db-*"):
        assert mode(side) == 0o600, side.name
    assert mode(token) == 0o600


def test_an_existing_loose_data_dir_is_tightened_at_start_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    config = tmp_path / "coordinator.toml"
    config.write_text(f'data_dir = "{data_dir}"\nagent_token_file = "{token}"\n')
    assert migrate(config).returncode == 0
    # As an older version (or a copy with cp -r) left them: readable by everybody.
    loose = [data_dir / "coordinator.db", data_dir / "ticket-signing.key", token]
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
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    os.chmod(token, 0o640)

    def not_yours(path: object, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(private_files.os, "chmod", not_yours)
    with pytest.raises(ConfigError) as refused:
        private_files.secure(CoordinatorConfig(data_dir=tmp_path / "state", agent_token_file=token))
    assert str(refused.value) == (
        f"{token} is open to other users (mode 0640) and cannot be made 0600: Operation not permitted; "
        "make it belong to the user the coordinator runs as, or chmod 0600 it"
    )


def test_a_data_dir_everybody_may_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(ConfigError, match="a directory everybody may write to"):
        private_files.secure(CoordinatorConfig(data_dir=shared))
    assert mode(shared) == 0o1777  # left as it was


def test_a_secret_file_is_written_private_even_over_a_loose_one(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    private_files.write_secret(path, "pvst_new")
    assert (mode(path), path.read_text()) == (0o600, "pvst_new\n")
