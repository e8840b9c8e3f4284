"""The staging directory: where received images live, under names the agent chooses.

A client's file name never becomes a path. Names are ``upload-<id>-<random>.<fmt>``
(and ``sync-...`` for images received from peers); anything asked for by name is
checked against that pattern, so nothing outside the directory can be reached.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from agent.errors import AgentFault
from agent.staging_budget import StagedCopy
from shared.staged_names import STAGED_NAME

PART_SUFFIX = ".part"
# A resumable upload's partial file: kept across agent restarts (not a ``.part``), found by
# its upload id alone (each PATCH names only that), never a copy to evict.
RESUMABLE = re.compile(r"upload-([0-9]+)-resumable")


class BadStagedName(AgentFault, ValueError):
    pass


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_name(self, kind: str, number: int, fmt: str) -> str:
        name = f"{kind}-{number}-{secrets.token_hex(4)}.{fmt}"
        assert STAGED_NAME.fullmatch(name)
        return name

    def path(self, name: str) -> Path:
        if not STAGED_NAME.fullmatch(name):
            raise BadStagedName(f"not a staged image name: {name!r}")
        return self.root / name

    def part_path(self, name: str) -> Path:
        return self.path(name).with_name(name + PART_SUFFIX)

    def resumable_path(self, upload_id: int) -> Path:
        name = f"upload-{upload_id}-resumable"
        assert RESUMABLE.fullmatch(name)
        return self.root / name

    @property
    def beside(self) -> Path:
        """Where what is derived from staged images is kept (their chunk manifests, raw
        conversions: agent/transfer/manifests.py), named after them."""
        return self.root / "manifests"

    def _remove_beside(self, name: str) -> None:
        for path in self.beside.glob(f"{name}.*"):
            path.unlink(missing_ok=True)

    def remove(self, name: str) -> bool:
        self._remove_beside(self.path(name).name)
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def upload_mtimes(self) -> dict[int, float]:
        """Upload id -> modification time of its newest file here, complete or partial."""
        found: dict[int, float] = {}
        for path in self.root.glob("upload-*"):
            match = STAGED_NAME.fullmatch(path.name.removesuffix(PART_SUFFIX)) or RESUMABLE.fullmatch(
                path.name
            )
            if match is None:
                continue
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            upload_id = int(match.group(2) if match.re is STAGED_NAME else match.group(1))
            found[upload_id] = max(mtime, found.get(upload_id, mtime))
        return found

    def remove_upload(self, upload_id: int) -> list[str]:
        """Every file of one upload, complete or partial (``upload-<id>-*``)."""
        removed = []
        for p in self.root.glob(f"upload-{upload_id}-*"):
            p.unlink(missing_ok=True)
            self._remove_beside(p.name)
            removed.append(p.name)
        return sorted(removed)

    def remove_partials(self) -> list[str]:
        """Leftovers of uploads that were cut off while this agent was not running.

        (Partial copies from peers stay: a sync resumes from them.)"""
        removed = []
        for p in self.root.glob("upload-*" + PART_SUFFIX):
            p.unlink(missing_ok=True)
            removed.append(p.name)
        return removed

    def copies(self) -> list[StagedCopy]:
        """Every complete image here (a partial one is work under way, never a copy to evict).
        Its modification time is its last use: writing it, sending from it (``touch``)."""
        found = []
        for path in self.root.iterdir():
            if not STAGED_NAME.fullmatch(path.name):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append(StagedCopy(path.name, st.st_size, st.st_mtime))
        return found

    def touch(self, name: str) -> None:
        """The copy was used now: it goes later than copies not used since."""
        try:
            os.utime(self.path(name))
        except FileNotFoundError:
            pass

    def used_bytes(self) -> int:
        """What staging holds: complete images, partial ones, and their records."""
        total = 0
        for path in self.root.rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except FileNotFoundError:
                continue
        return total

    def filesystem_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.root).total
        except OSError:
            return 0

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return 0

    def fsync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
