"""Programs the benchmarks need from the system, installed from Debian when we may."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from benchmarks.base import Skip


class CommandFailed(RuntimeError):
    pass


def run_command(argv: list[str], timeout: float = 30) -> str:
    """Run a set-up command; its stdout, or CommandFailed with its stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def find_program(name: str, extra_dirs: tuple[str, ...] = ("/usr/sbin", "/sbin")) -> Path | None:
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(extra_dirs))
    return Path(found) if found else None


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    """apt-get update, then install ``packages`` (root only); output only on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"  installing Debian packages: {' '.join(packages)} (apt-get, as root)", flush=True)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-10:])
            raise Skip(f"'{' '.join(argv)}' failed (exit {result.returncode}):\n{tail}")


def require_disk(workdir: Path, need: int, what: str) -> None:
    """Skip unless ``need`` bytes are free in ``workdir`` (``what`` says what they are for)."""
    free = shutil.disk_usage(workdir).free
    if need > free:
        raise Skip(
            f"{what} needs {need / 2**30:.1f} GiB free in {workdir}, "
            f"{free / 2**30:.1f} GiB are free; use --workdir"
        )


def require_program(name: str, package: str, why: str) -> Path:
    """The program's path; installs the Debian ``package`` as root, else Skip saying what to install."""
    path = find_program(name)
    if path is not None:
        return path
    if can_install():
        apt_install(package)
        path = find_program(name)
        if path is not None:
            return path
        raise Skip(f"{name} is still missing after installing {package}")
    raise Skip(
        f"{name} is missing ({why}): install it as root with "
        f"'apt-get install {package}' (Debian, Ubuntu, Proxmox VE), then run this again"
    )
