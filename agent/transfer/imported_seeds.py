"""A seed's index, recorded when an import lands: no seed is read at rollout time.

An import makes a PVE disk from a staged image whose chunk manifest this node holds: a
received copy's (the coordinator signed it in the copy's ticket, receive.py) or an
upload's (built here when it was staged, manifests.py). The disk holds the same guest
view, so that manifest says which chunk sits at which guest offset of it: the index a
later version's copy would otherwise make by reading and hashing the whole disk when
its session opens (seeds.py). Nothing here is trusted later either: a chunk taken from
the disk is checked against the new version's signed manifest when it is taken.
"""

from __future__ import annotations

import asyncio
import logging

from agent.pve import NodePve
from agent.transfer.manifests import StagedManifests
from agent.transfer.receive import Receives
from agent.transfer.seed_source import resolve_seed
from agent.transfer.seeds import Seeds
from shared.messages.transfers import Seed

log = logging.getLogger(__name__)

# How long an import's end waits for its upload's manifest build (started when the upload
# was staged; it runs beside the import, so it is usually done).
MANIFEST_WAIT = 30.0


class ImportedSeeds:
    """Records the index of each imported disk, in the background (an import's end does
    not wait for it)."""

    def __init__(self, pve: NodePve, seeds: Seeds, receives: Receives, manifests: StagedManifests) -> None:
        self.pve, self.seeds, self.receives, self.manifests = pve, seeds, receives, manifests
        self._tasks: set[asyncio.Task[None]] = set()

    def landed(self, staged_name: str, vmid: int, volume_id: str) -> None:
        """An import of ``staged_name`` made VM ``vmid`` with its disk ``volume_id``."""
        task = asyncio.create_task(self._record(staged_name, vmid, volume_id), name=f"seed-record-{vmid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, staged_name: str, vmid: int, volume_id: str) -> None:
        manifest = self.receives.manifest_of(staged_name) or await self.manifests.built(
            staged_name, MANIFEST_WAIT
        )
        if manifest is None:
            log.info(
                "import of %s: no manifest at hand; its disk is indexed when a copy needs it", staged_name
            )
            return
        try:
            where = await resolve_seed(self.pve, Seed(vmid=vmid, volume_id=volume_id))
            if where is not None:
                await asyncio.to_thread(self.seeds.record, where[0], where[1], manifest)
        except Exception as exc:  # noqa: BLE001 - only a later copy's speed depends on it
            log.warning("import of %s: the index of VM %s's disk not recorded: %s", staged_name, vmid, exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
