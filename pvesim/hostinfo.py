"""Real figures of the machine the emulator runs on (every emulated node reports them)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

_last_cpu: tuple[int, int, int] | None = None


def cpu_count() -> int:
    return os.cpu_count() or 1


def _proc_stat() -> tuple[int, int, int]:
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    iowait = fields[4] if len(fields) > 4 else 0
    return sum(fields), fields[3] + iowait, iowait


def cpu_usage() -> tuple[float, float]:
    """(cpu, iowait) as fractions over the time since the previous call (like pvestatd)."""
    global _last_cpu
    try:
        sample = _proc_stat()
    except OSError:
        return 0.0, 0.0
    prev, _last_cpu = _last_cpu, sample
    if prev is None or sample[0] <= prev[0]:
        return 0.0, 0.0
    dt = sample[0] - prev[0]
    return max(0.0, 1.0 - (sample[1] - prev[1]) / dt), max(0.0, (sample[2] - prev[2]) / dt)


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                out[key.strip().lower()] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    total = out.get("memtotal", 0)
    avail = out.get("memavailable", out.get("memfree", 0))
    return {
        "total": total,
        "free": out.get("memfree", 0),
        "available": avail,
        "used": total - avail,
        "swaptotal": out.get("swaptotal", 0),
        "swapfree": out.get("swapfree", 0),
        "shared": out.get("shmem", 0),
    }


def disk(path: Path) -> dict[str, int]:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    return {
        "total": total,
        "avail": st.f_bavail * st.f_frsize,
        "used": total - free,
        "free": free,
    }


def cpuinfo() -> dict[str, Any]:
    model = "unknown"
    mhz = 0.0
    flags = ""
    sockets: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    model = value
                elif key == "cpu MHz":
                    mhz = float(value)
                elif key == "flags":
                    flags = value
                elif key == "physical id":
                    sockets.add(value)
    except OSError:
        pass
    return {
        "cpus": cpu_count(),
        "model": model,
        "mhz": f"{mhz:.3f}",
        "sockets": max(1, len(sockets)),
        "cores": cpu_count(),
        "user_hz": os.sysconf("SC_CLK_TCK"),
        "hvm": "1" if " vmx" in f" {flags}" or " svm" in f" {flags}" else "0",
        "flags": flags,
    }


def kernel() -> tuple[dict[str, str], str]:
    u = platform.uname()
    return (
        {"sysname": u.system, "release": u.release, "version": u.version, "machine": u.machine},
        f"{u.system} {u.release} {u.version}",
    )


def loadavg() -> list[str]:
    return [f"{x:.2f}" for x in os.getloadavg()]
