"""One serving coordinator per SQLite file.

SQLite is one file on one host, written by one process at a time: coordinator replicas
need MySQL/MariaDB. A second ``serve`` on the same SQLite file (a replica set up by
mistake) is refused at start with the reason, rather than left to fight over the file
and to run jobs and limits twice. The lock is the kernel's (flock): a killed coordinator
holds it no longer.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from coordinator.errors import CoordinatorError


class SqliteInUse(CoordinatorError, RuntimeError):
    pass


def hold_sqlite(url: str) -> IO[bytes] | None:
    """Lock ``url``'s SQLite file for this process (None for another database); keep the
    returned file open for as long as the process serves."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database + ".serve-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "ab")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise SqliteInUse(
            f"another coordinator process serves the SQLite database {parsed.database}: SQLite is "
            "for one coordinator; replicas share a MySQL/MariaDB database (database_url)"
        ) from None
    return lock
