"""The coordinator's secrets stay its own: data_dir 0700, the files with secrets 0600.

The SQLite database holds every registered cluster's PVE token secret, the ticket key
signs transfers, the agent credential key is what every node's agent credential is
derived from. Every command of the
coordinator makes them private before it touches them (creating the data directory and
the database file so); one it cannot make private (someone else's file) stops it with a
message naming the file and what to do. Nothing here is ever loosened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from coordinator.config import CoordinatorConfig
from shared.config import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite keeps recent writes beside the database until a checkpoint.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or an in-memory one)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def secure(config: CoordinatorConfig) -> list[str]:
    """Make the coordinator's state private; returns what had to be tightened (for the log)."""
    tightened: list[str] = []
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if config.data_dir.stat().st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        raise ConfigError(
            f"data_dir {config.data_dir} is a directory everybody may write to: "
            "give the coordinator a directory of its own (it is made 0700)"
        )
    _private(config.data_dir, tightened)
    database = sqlite_path(config.resolved_database_url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # Created here rather than by SQLite under whatever umask (its side files copy this mode).
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        for path in [database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)]:
            _private(path, tightened)
    for secret in (config.resolved_ticket_key_file, config.agent_key_file):
        _private(secret, tightened)
    return tightened


def _private(path: Path, tightened: list[str]) -> None:
    """No access for group and others (what the owner has stays)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return  # made later, under the umask set at start-up
    private = current & ~0o077
    if private == current:
        return
    try:
        os.chmod(path, private)
    except OSError as exc:
        raise ConfigError(
            f"{path} is open to other users (mode {current:04o}) and cannot be made {private:04o}: "
            f"{exc.strerror}; make it belong to the user the coordinator runs as, or chmod {private:04o} it"
        ) from None
    tightened.append(f"{path} ({current:04o} -> {private:04o})")
