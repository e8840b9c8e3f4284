"""A disk of its own for every node: an ext4 block device per node, held in memory.

Real nodes write what they receive to their own disks; on this machine every namespace
shares one virtio disk, so four targets' final fdatasync would queue behind each other
and the benchmark would measure that queue rather than the transfer. Each node's staging
goes to a disk of its own in RAM instead: an ext4 file system on a loop device whose
backing file lives in a tmpfs and is filled once, up front.

Why not a plain tmpfs per node (as before): this machine is a VM whose balloon driver
hands freed guest memory back to the host (free page reporting), so the first write to
memory the guest has not used for a few seconds faults on the host. Writing 1 GiB into a
tmpfs cost 0.5 CPU s when the pages had just been freed and 2.0 s once the writes went
beyond them (10 x 1 GiB, O_DIRECT, 4 MiB writes); in the 4-target sync each target's
write thread spent ~2.4 s of system time per GiB in that page copy, ~8 CPU s of a rep
that the 2 cores did not have. A real disk costs the writer nothing of the sort: the
O_DIRECT write is a DMA. Through the loop device, whose pages were all touched when the
backing file was filled (and stay: ext4 is mounted without discard), the same 1 GiB costs
0.27 CPU s on the whole machine (the loop worker's copy), and the agents' O_DIRECT path
is the one a real block device takes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from benchmarks.base import Skip
from benchmarks.system import require_program, run_command

FS_SPARE = 512 << 20  # the journal, inode tables, the agents' space reserve
FILL = 64 << 20


class NodeDisks:
    """``paths[node]``: the mount point of that node's disk of ``size_bytes`` usable bytes."""

    def __init__(self, root: Path, nodes: list[str], size_bytes: int) -> None:
        self.paths = {node: root / node for node in nodes}
        self.device_size = size_bytes + FS_SPARE
        self._ram = root / "ram"
        self._mounted: list[Path] = []

    def __enter__(self) -> NodeDisks:
        require_program("mkfs.ext4", "e2fsprogs", "each node's disk is an ext4 file system")
        need = len(self.paths) * self.device_size
        available = _mem_available()
        if need + (2 << 30) > available:
            raise Skip(
                f"the node disks need {need / 2**30:.1f} GiB of RAM (+2 GiB spare), "
                f"{available / 2**30:.1f} GiB are available; use --quick"
            )
        try:
            self._mount(["-t", "tmpfs", "-o", f"size={need + (64 << 20)}", "tmpfs"], self._ram)
            for node, path in self.paths.items():
                backing = self._ram / f"{node}.ext4"
                _fill(backing, self.device_size)
                mkfs = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", _MKFS_EXTENDED, str(backing)]
                run_command(mkfs, timeout=120)
                self._mount(["-o", "loop", str(backing)], path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Lazy: a process that still has a file open must not keep the disks mounted; the
        # loop devices ("-o loop" sets autoclear) go when their file systems do.
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self._mounted.clear()

    def _mount(self, args: list[str], path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        run_command(["mount", *args, str(path)])
        self._mounted.append(path)


# No discard anywhere: it would punch holes in the backing file, and the pages would go
# back to the host. Inode tables and journal written now, not by a kernel thread mid-run.
_MKFS_EXTENDED = "nodiscard,lazy_itable_init=0,lazy_journal_init=0"


def _fill(path: Path, size: int) -> None:
    """Write every page of the backing file (fallocate would leave them to the first write)."""
    zeros = bytes(FILL)
    with open(path, "wb") as f:
        for _ in range(size // FILL):
            f.write(zeros)
        f.write(bytes(size % FILL))


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        line = next(line for line in f if line.startswith("MemAvailable:"))
    return int(line.split()[1]) * 1024
