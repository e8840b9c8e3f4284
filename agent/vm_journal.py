"""The VMIDs this agent asked PVE to create, written down before it asks.

Why: a VM's owner is proven by the marker (``[pvesphere KEY]``) in its description, but
PVE writes the description only when the create task ends. Before that the VM is a bare
config, ``lock: create`` (qemu-server's create_and_lock_config reserves the VMID that way,
and only the create task's end replaces it). A create cut off there (the worker killed, the
node or PVE restarted) leaves the bare config and whatever disk it had allocated: a VM that
nothing marks as ours, which PVE will not remove without ``skiplock``. The journal is the
proof for exactly that case.

Why on the agent's node and not (only) in the coordinator's database: the coordinator
records the VMID on its job before asking the agent (coordinator/vmids.py), so the
database always knows which VMID a job holds; but a VMID held is not a VM made. Between
the allocation and PVE's create an administrator may take that VMID (PVE reserves nothing);
our create is then refused with "already exists", and the VM there is theirs. Only the
process that calls PVE knows whether its create was the one PVE accepted, so the agent
keeps the journal and the agent alone judges ownership. What each crash leaves:

* agent killed before the entry is written: PVE was not asked; nothing to find.
* agent killed after the entry, before or during the create call: the entry names the
  VMID; the VM is absent (entry dropped at the next listing) or at ``lock: create``
  (ours: removed by a retry, a cascade delete or the sweep).
* create refused ("already exists"): the entry is dropped before the import reports the
  VMID taken. Killed between the two, the entry outlives the refusal; it still cannot
  condemn the other VM unless that one is itself at ``lock: create`` with no marker, and
  even then only a job's own key prefix or the sweep (which also needs the database not
  to account for the VMID) acts on it.
* create finished: the marker proves ownership from then on; the entry is dropped once
  the import is done or the VM destroyed.
* coordinator killed at any step: the agent's journal is unaffected; the job row still
  holds the VMID, so a restarted coordinator re-drives the job, which reuses the VMID.

Authority is split: the agent (journal and marker) says whether a VM is ours, the
coordinator's database whether it is still wanted. A VM is removed only when both agree:
by a job of its own key (retry, failure clean-up), by a cascade delete of its template, or
by the sweep (coordinator/jobs/vm_sweep.py) when no row accounts for its VMID.

An entry vouches only for a VM at its create's lock (``lock: create`` for an import,
``lock: clone`` for a clone) with no marker (``owner_key``): a VM that a create of ours
finished carries the marker, so a journaled VMID whose VM has neither is someone else's.
The file is tiny (one entry per import or clone in flight, plus finished clones for a
day: agent/cloner.py says why) and every change replaces it atomically (written to a
temporary file, fsynced, renamed).

Clones (keys ``c<N>``, agent/cloner.py) use the same journal and a marker of their own,
``[pvesphere c<N>]``, only while they are being made: a finished clone is the user's VM and
carries no marker. No template key prefix (a cascade delete's ``t<id>-``, the sweep's ``t``)
covers a clone key (``belongs``), so neither ever takes a clone, half-made or not.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.private_files import replace_private

log = logging.getLogger(__name__)
# t<template>-u<upload> / t<template>-s<sync task>: an import; c<clone>: a clone being made.
MARKER = re.compile(r"\[pvesphere (t[0-9]+-[us][0-9]+|c[0-9]+)\]")
CREATE_LOCK = "create"
# PVE's clone writes its temporary config as `lock: clone` (API2/Qemu.pm clone_vm).
CLONE_LOCK = "clone"
# A finished clone's entry is kept this long: a coordinator that lost the answer (the agent
# restarted between the clone's end and its next look) then still hears "done".
DONE_KEEP_SECONDS = 86400.0


def marker(key: str) -> str:
    """Written into the description of every VM we create; proves the VM is ours."""
    return f"[pvesphere {key}]"


def is_clone_key(key: str) -> bool:
    return key.startswith("c")


def is_template_key(key: str) -> bool:
    """Whether ``key`` is an import's (the VM it marks is one of our templates)."""
    return key.startswith("t")


@dataclass(frozen=True)
class Entry:
    key: str
    # When the entry was written (Unix time): before PVE was asked to create the VM.
    at: float
    # A clone that finished (its marker removed): vouches for nothing, remembers the key.
    done: bool = False

    @property
    def lock(self) -> str:
        """The lock PVE holds on the VM while the create this entry announced runs."""
        return CLONE_LOCK if is_clone_key(self.key) else CREATE_LOCK


def owner_key(config: dict[str, Any], entry: Entry | None) -> str | None:
    """The key of the pvesphere import that made the VM with ``config``, or None if the VM is
    not provably ours: its marker, or else a journal entry for a VM still at its create's lock
    (``lock: create``, or ``lock: clone`` for a clone)."""
    found = MARKER.search(str(config.get("description", "")))
    if found:
        return found.group(1)
    if entry is not None and not entry.done and config.get("lock") == entry.lock:
        return entry.key
    return None


def belongs(key: str, prefix: str) -> bool:
    """Whether import ``key`` falls under ``prefix``: a whole key ("t3-u1", which is not a
    prefix of "t3-u10"), a template's "t3-", or "t" for any of ours."""
    if not key.startswith(prefix):
        return False
    return len(key) == len(prefix) or not prefix[-1].isdigit()


class VmJournal:
    """{vmid: Entry} in one JSON file, rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[int, Entry] = self._load()

    def _load(self) -> dict[int, Entry]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Refuse to start rather than forget what we may have half made.
            raise RuntimeError(f"VM journal {self.path} is unreadable: {exc}") from exc
        return {
            int(vmid): Entry(str(e["key"]), float(e["at"]), bool(e.get("done", False)))
            for vmid, e in raw.items()
        }

    def _save(self) -> None:
        old = time.time() - DONE_KEEP_SECONDS
        for vmid in [v for v, e in self.entries.items() if e.done and e.at < old]:
            del self.entries[vmid]
        data = {
            str(vmid): {"key": e.key, "at": e.at, **({"done": True} if e.done else {})}
            for vmid, e in sorted(self.entries.items())
        }
        replace_private(self.path, (json.dumps(data, indent=1) + "\n").encode())

    def in_flight(self) -> dict[int, Entry]:
        """The entries of creates and clones not finished (those that can vouch for a VM)."""
        return {vmid: e for vmid, e in self.entries.items() if not e.done}

    def get(self, vmid: int) -> Entry | None:
        return self.entries.get(vmid)

    def record(self, vmid: int, key: str) -> None:
        """Before PVE is asked to create ``vmid`` for import ``key``: on disk when this returns."""
        self.entries[vmid] = Entry(key, time.time())
        self._save()

    def finished_clone(self, vmid: int, key: str) -> None:
        """Clone ``key`` is about to drop its marker: from now on the entry only remembers that
        the VM was finished for that key (it vouches for nothing)."""
        self.entries[vmid] = Entry(key, time.time(), done=True)
        self._save()

    def forget(self, vmid: int) -> None:
        if self.entries.pop(vmid, None) is not None:
            self._save()
