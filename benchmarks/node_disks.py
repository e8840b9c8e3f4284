"""A disk of its own for every node: one tmpfs per node for its staging directory.

Real nodes write what they receive to their own disks; on this machine every namespace
shares one virtio disk, so four targets' final fdatasync would queue behind each other
and the benchmark would measure that queue rather than the transfer. Each node's staging
goes to its own tmpfs instead (the relay reference writes there too, so both compare alike).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType


class NodeDisks:
    def __init__(self, root: Path, nodes: list[str], size_bytes: int) -> None:
        self.paths = {node: root / node for node in nodes}
        self.size = size_bytes
        self._mounted: list[Path] = []

    def __enter__(self) -> NodeDisks:
        try:
            for path in self.paths.values():
                path.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(path)],
                    check=True,
                    capture_output=True,
                )
                self._mounted.append(path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self._mounted.clear()
