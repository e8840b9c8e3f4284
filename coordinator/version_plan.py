"""Pure decisions about a template's versions (contract 6.1): which nodes a new version is
rolled out to, and which old versions ``keep_versions`` removes. The I/O is in
coordinator/versions.py and coordinator/version_delete.py; tests/unit/test_version_plan.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """A node's instance of one version of the template."""

    node_id: int
    version: int
    available: bool


def rollout_nodes(held: Iterable[Held], new_version: int, import_node_id: int) -> list[int]:
    """The nodes that get a sync task for ``new_version``: every node other than the import
    node holding an available instance of an earlier version (one that only has a copy under
    way, or a failed one, is not a holder: it asked for that version, not for the template)."""
    return sorted(
        {h.node_id for h in held if h.available and h.version < new_version and h.node_id != import_node_id}
    )


@dataclass(frozen=True)
class VersionFacts:
    version: int
    # The upload's status (a version's status is its upload's: coordinator/states/upload.py).
    status: str


def versions_to_prune(versions: Iterable[VersionFacts], current: int, keep: int) -> list[int]:
    """The versions ``keep_versions`` = ``keep`` removes, oldest first: those older than the
    ``keep`` newest imported versions, imported or failed (an upload or import still under way,
    or a delete already running, is left alone), never the current version. Whether a linked
    clone still uses one is for the caller to check (it asks PVE)."""
    versions = list(versions)
    imported = sorted((v.version for v in versions if v.status == "imported"), reverse=True)
    if len(imported) <= keep:
        return []
    oldest_kept = imported[keep - 1]
    return sorted(
        v.version
        for v in versions
        if v.version < oldest_kept and v.version != current and v.status in ("imported", "failed")
    )
