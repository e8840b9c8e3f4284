"""Measuring other processes (peak memory and CPU time from /proc), files on disk, and medians.

Peak RSS: a thread reads VmRSS of each process every ``interval`` seconds and keeps
the largest value. The kernel's own peak (VmHWM) is read at the end too; it is reset
first through /proc/PID/clear_refs (``5``, Linux >= 4.0) so that it covers only the
measured window. When the reset is refused, VmHWM is the peak since the process started.
CPU: user+system seconds of the process (all threads) and of its children it has reaped.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

READ_CHUNK = 4 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes (empty once the process is gone)."""
    figures: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    figures[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return figures


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and of its reaped children (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14..17.
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSplit:
    """User and system CPU seconds of a process (all its threads, also the ones that have ended)
    and of its main thread alone (an asyncio program's event loop)."""

    user: float = 0.0
    system: float = 0.0
    main_user: float = 0.0
    main_system: float = 0.0

    @property
    def other_user(self) -> float:
        return self.user - self.main_user

    @property
    def other_system(self) -> float:
        return self.system - self.main_system

    def __sub__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(
            self.user - other.user,
            self.system - other.system,
            self.main_user - other.main_user,
            self.main_system - other.main_system,
        )


def _user_system(path: str) -> tuple[float, float]:
    try:
        with open(path) as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_split(pid: int) -> CpuSplit:
    """The process's and its main thread's user and system seconds (children not included)."""
    return CpuSplit(*_user_system(f"/proc/{pid}/stat"), *_user_system(f"/proc/{pid}/task/{pid}/stat"))


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot: not idle and not iowait (steal counts as busy:
    another guest had the core)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (its main thread's)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` to its current RSS; False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Usage:
    """Memory (bytes) and CPU (seconds) of one process over a measured window."""

    name: str
    pid: int
    before: int = 0
    sampled_max: int = 0
    hwm: int = 0
    hwm_reset: bool = False
    samples: int = 0
    cpu_start: float = 0.0
    cpu: float = 0.0

    @property
    def peak(self) -> int:
        """The sampled maximum, or VmHWM when it covers only this window and is higher."""
        return max(self.sampled_max, self.hwm) if self.hwm_reset else self.sampled_max


def own_cpu_seconds() -> float:
    """User+system CPU seconds of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """User+system CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ProcessWatch:
    """``with ProcessWatch({"coordinator": pid, ...}) as w: ...`` then ``w.usage[name]``.

    ``own_cpu`` is what this process (the client side of the measured work) spent meanwhile.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.interval = interval
        self.usage = {name: Usage(name, pid) for name, pid in pids.items()}
        self.own_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for use in self.usage.values():
            rss = proc_status(use.pid).get("VmRSS")
            if rss is not None:
                use.sampled_max = max(use.sampled_max, rss)
                use.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessWatch:
        for use in self.usage.values():
            use.hwm_reset = reset_peak(use.pid)
            use.before = proc_status(use.pid).get("VmRSS", 0)
            use.cpu_start = cpu_seconds(use.pid)
        self._sample()
        self._thread.start()
        self.own_cpu = -own_cpu_seconds()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.own_cpu += own_cpu_seconds()
        self._stop.set()
        self._thread.join()
        self._sample()
        for use in self.usage.values():
            use.hwm = proc_status(use.pid).get("VmHWM", 0)
            use.cpu = cpu_seconds(use.pid) - use.cpu_start


def make_random_file(path: Path, size: int, chunk: int = 4 << 20) -> None:
    """``size`` random bytes (nothing in them compresses), written in ``chunk``-sized pieces."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def warm_cache(path: Path) -> None:
    """Read the whole file once so that the next reader finds it in the page cache."""
    buf = bytearray(READ_CHUNK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def settle() -> None:
    """Write back dirty pages so the previous transfer's writeback does not slow the next one."""
    os.sync()
    time.sleep(0.5)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
