"""Which file a seed is: a disk of a VM on this node that we imported, through PVE.

A hop's seeds come from the peer that opens the session (it has them from the
coordinator), so they are no authority: a seed is read only if its VM carries our import
marker (agent/vm_journal.py) and the volume is one of that VM's disks, with the path PVE
gives for it (read-only GET calls, as an export looks its disk up: export_source.py).
What is read is only ever used where it matches the signed manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.export_source import FILE_PATH, VOLNAME, _disks
from agent.pve import NodePve
from agent.vm_journal import MARKER
from shared.messages.transfers import Seed
from shared.pve_formats import STORAGE_ID_RE

log = logging.getLogger(__name__)
SEED_FORMATS = ("raw", "qcow2")


async def resolve_seed(pve: NodePve, seed: Seed) -> tuple[Path, str] | None:
    """(path, format) of the seed's volume, or None (said in the log) where it is no seed."""
    config = await pve.call("get", f"nodes/{pve.node}/qemu/{seed.vmid}/config")
    if not MARKER.search(str(config.get("description", ""))):
        log.warning("seed VM %s on %s is not one we imported: not read", seed.vmid, pve.node)
        return None
    volumes = {str(config[key]).split(",")[0] for key in _disks(config)}
    if seed.volume_id not in volumes:
        log.warning("seed %s is not a disk of VM %s: not read", seed.volume_id, seed.vmid)
        return None
    storage, _, volname = seed.volume_id.partition(":")
    if not STORAGE_ID_RE.fullmatch(storage) or not VOLNAME.fullmatch(volname):
        return None
    info = await pve.call("get", f"nodes/{pve.node}/storage/{storage}/content/{seed.volume_id}")
    path, fmt = str(info.get("path") or ""), str(info.get("format") or "")
    if not FILE_PATH.fullmatch(path) or fmt not in SEED_FORMATS:
        log.info("seed %s (%s, %r) has no file this agent reads: not used", seed.volume_id, fmt, path[:100])
        return None
    return Path(path), fmt
