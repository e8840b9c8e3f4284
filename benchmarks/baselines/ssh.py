"""The ssh baseline: ``ssh -c aes128-gcm@openssh.com -p PORT USER@127.0.0.1 'cat > dst' < src``.

A throw-away sshd listens on a free loopback port with ed25519 host and client keys
made in a temporary directory (the recipe of shared/research/calibration.md: StrictModes
no, UsePAM no, PermitRootLogin prohibit-password, no password logins). It stands in for
how administrators move images today (scp, or PVE's ``pvesm export | ssh ... pvesm import``).
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from benchmarks.base import Skip
from benchmarks.measure import children, children_cpu_seconds, cpu_seconds
from benchmarks.system import require_program
from demo.stack import free_port

CIPHER = "aes128-gcm@openssh.com"
START_TIMEOUT = 15.0


class SshError(RuntimeError):
    pass


@dataclass(frozen=True)
class Transfer:
    seconds: float
    """Wall clock of the whole ssh command, connection set-up included."""
    client_cpu: float
    """User+system seconds of the ssh client."""
    server_cpu: float
    """User+system seconds of the sshd session and the remote command (the listener's reaped children)."""


class LocalSshd:
    """``with LocalSshd(workdir) as sshd: seconds = sshd.copy(src, dst)``; Skip when it cannot run."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "sshd"
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = 0
        self.ssh = Path("ssh")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def _keys(self, keygen: Path) -> None:
        for name in ("host_ed25519", "client_ed25519"):
            key = self.dir / name
            if not key.exists():
                subprocess.run([str(keygen), "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.dir / "authorized_keys").write_bytes((self.dir / "client_ed25519.pub").read_bytes())

    def _config(self) -> Path:
        path = self.dir / "sshd_config"
        path.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "StrictModes no\n"
            "UsePAM no\n"
        )
        return path

    def start(self) -> None:
        why = "the ssh baseline runs a local sshd"
        sshd = require_program("sshd", "openssh-server", why)
        self.ssh = require_program("ssh", "openssh-client", why)
        keygen = require_program("ssh-keygen", "openssh-client", why)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys(keygen)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.port = free_port()
        config = self._config()
        self._proc = subprocess.Popen(
            [str(sshd), "-D", "-f", str(config), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])
        except OSError:
            return "(no log)"

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise Skip(f"sshd exited at start-up (exit {self._proc.returncode}):\n{self._log_tail()}")
            result = subprocess.run(self.command("true"), capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                return
            last = result.stderr.strip()
            time.sleep(0.2)
        raise Skip(f"cannot log in to the local sshd: {last}\nsshd log:\n{self._log_tail()}")

    def command(self, remote: str) -> list[str]:
        """The ssh command line that runs ``remote`` (a shell command) on the local sshd."""
        return [
            str(self.ssh),
            "-F",
            "/dev/null",
            "-c",
            CIPHER,
            "-p",
            str(self.port),
            "-i",
            str(self.dir / "client_ed25519"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "Compression=no",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
            remote,
        ]

    def _sessions_reaped(self, timeout: float = 5.0) -> None:
        """Wait until the listener has reaped its session processes (their CPU is then counted)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while children(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def run(self, remote: str, stdin: IO[bytes] | None = None) -> Transfer:
        """Run ``remote`` with ``stdin``: the wall-clock seconds and the CPU of both ends."""
        assert self._proc is not None
        self._sessions_reaped()
        server_before = cpu_seconds(self._proc.pid)
        client_before = children_cpu_seconds()
        started = time.perf_counter()
        result = subprocess.run(self.command(remote), stdin=stdin, capture_output=True)
        seconds = time.perf_counter() - started
        client_cpu = children_cpu_seconds() - client_before
        if result.returncode != 0:
            raise SshError(
                f"ssh {remote!r} failed (exit {result.returncode}): {result.stderr.decode(errors='replace')}"
            )
        self._sessions_reaped()
        return Transfer(seconds, client_cpu, cpu_seconds(self._proc.pid) - server_before)

    def copy(self, src: Path, dst: Path) -> Transfer:
        """``ssh ... 'cat > dst' < src``, checking the copy's size."""
        with open(src, "rb") as f:
            transfer = self.run(f"cat > {shlex.quote(str(dst))}", stdin=f)
        if dst.stat().st_size != src.stat().st_size:
            raise SshError(f"ssh copy of {src} has {dst.stat().st_size} bytes, not {src.stat().st_size}")
        return transfer

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> LocalSshd:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
