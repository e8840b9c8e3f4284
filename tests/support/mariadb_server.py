"""A MariaDB server of the test's own, to stop and restart under a running coordinator.

The shared MariaDB at 127.0.0.1:3306 serves every engineer's tests at once: restarting it
would break theirs. This one runs from the system's server binary on a fresh data
directory in tmp, on a free port of loopback (and a socket in tmp), root without a
password; ``stop`` and ``start`` keep the directory and the port, as a server restart
on a real host would.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from demo.stack import free_port
from tests.support import mariadb

# Where Debian/Ubuntu and most distributions put the server (mysqld is a link to it).
SERVER_BINARIES = ("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
INSTALL_DB = ("mariadb-install-db", "mysql_install_db")
# A small server: the default 128 MiB buffer pool and 96 MiB redo log are not needed for a
# few hundred rows, and 7 engineers share this machine's memory and disk.
SMALL = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable_reason() -> str | None:
    """None when a MariaDB server can be run here, else why not."""
    if _which(SERVER_BINARIES) is None:
        return f"no MariaDB server binary ({', '.join(SERVER_BINARIES)}) to run a private server"
    if _which(INSTALL_DB) is None:
        return f"no {' or '.join(INSTALL_DB)} to initialise a private server's data directory"
    return None


class MariaDBServer:
    """One mariadbd on ``base``/data, listening on 127.0.0.1:``port``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.log_path = base / "mariadbd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        binary, install = _which(SERVER_BINARIES), _which(INSTALL_DB)
        assert binary and install, unavailable_reason()
        self.binary, self.install_db = binary, install

    @property
    def address(self) -> str:
        """user@host:port, as tests.support.mariadb takes it."""
        return f"root@127.0.0.1:{self.port}"

    def initialise(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                self.install_db,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
                *SMALL,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start on the same data directory and port; returns once it answers SELECT 1."""
        assert not self.running, "already running"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--no-defaults",
                    f"--datadir={self.data}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={self.base / 'mariadbd.sock'}",
                    f"--pid-file={self.base / 'mariadbd.pid'}",
                    "--user=root",
                    "--skip-name-resolve",
                    *SMALL,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"mariadbd exited during start-up:\n{self.tail()}")
            if mariadb.unavailable_reason(self.address) is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not answer in {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM: MariaDB's own shutdown (connections closed, InnoDB flushed); SIGKILL: a crash,
        recovered from the redo log at the next start."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"mariadbd did not stop on signal {sig} in {timeout} s") from None

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def create_database(self) -> str:
        """A fresh database on this server; its SQLAlchemy URL."""
        return mariadb.create_database(self.address)[1]
