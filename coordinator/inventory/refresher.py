"""Registering clusters and keeping their inventory fresh (on demand and periodically)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.config import CoordinatorConfig
from coordinator.db.models import PveCluster
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.errors import CoordinatorError
from coordinator.inventory.pve_client import ClusterSnapshot, PveClient, PveError
from coordinator.inventory.store import apply_snapshot

log = logging.getLogger(__name__)


class ClusterExists(CoordinatorError):
    def __init__(self, existing: PveCluster) -> None:
        super().__init__(existing.cluster_name)
        self.existing = existing


class InventoryRefresher:
    def __init__(self, config: CoordinatorConfig, db: async_sessionmaker[AsyncSession]) -> None:
        self.config = config
        self.db = db
        self._locks: dict[int, asyncio.Lock] = {}

    def client(self, api_url: str, token_id: str, token_secret: str, verify_ssl: bool) -> PveClient:
        verify: bool | str = False
        if verify_ssl:
            verify = self.config.pve_ca_file or True
        return PveClient(api_url, token_id, token_secret, verify, self.config.pve_timeout)

    async def read(self, client: PveClient) -> ClusterSnapshot:
        return await asyncio.to_thread(client.snapshot)

    async def register(
        self, api_url: str, token_id: str, token_secret: str, verify_ssl: bool, actor: str
    ) -> PveCluster:
        """Read the cluster first; save nothing unless PVE answered with a full inventory."""
        client = self.client(api_url, token_id, token_secret, verify_ssl)
        snap = await self.read(client)
        async with self.db() as session:
            existing = await session.scalar(
                select(PveCluster).where(PveCluster.cluster_name == snap.cluster_name)
            )
            if existing is not None:
                raise ClusterExists(existing)
            cluster = PveCluster(
                cluster_name=snap.cluster_name,
                api_url=client.api_url,
                token_id=token_id,
                token_secret=token_secret,
                verify_ssl=verify_ssl,
                creator=actor,
                modifier=actor,
            )
            session.add(cluster)
            await session.flush()
            await apply_snapshot(session, cluster, snap)
            await session.commit()
        log.info(
            "registered cluster %s (%s): %d nodes, %d storage rows",
            snap.cluster_name,
            client.api_url,
            len(snap.nodes),
            len(snap.storages),
        )
        return cluster

    async def update(
        self,
        cluster_id: int,
        changes: dict[str, object],
        actor: str,
    ) -> PveCluster:
        """Change URL/token/TLS of a cluster (token rotation); PVE must accept them first."""
        async with self.db() as session:
            cluster = await session.get(PveCluster, cluster_id)
            if cluster is None:
                raise LookupError(cluster_id)
            api_url = str(changes.get("api_url") or cluster.api_url)
            token_id = str(changes.get("token_id") or cluster.token_id)
            token_secret = str(changes.get("token_secret") or cluster.token_secret)
            verify = changes.get("verify_ssl")
            verify_ssl = cluster.verify_ssl if verify is None else bool(verify)
            client = self.client(api_url, token_id, token_secret, verify_ssl)
            snap = await self.read(client)
            if snap.cluster_name != cluster.cluster_name:
                raise PveError(
                    "other_cluster",
                    f"{client.api_url} answers as cluster {snap.cluster_name!r}, "
                    f"not {cluster.cluster_name!r}: register it as a new cluster instead",
                )
            cluster.api_url = client.api_url
            cluster.token_id = token_id
            cluster.token_secret = token_secret
            cluster.verify_ssl = verify_ssl
            cluster.modifier = actor
            await apply_snapshot(session, cluster, snap)
            await session.commit()
            return cluster

    async def refresh(self, cluster_id: int) -> PveCluster:
        """Re-read one cluster. On failure the error is recorded on the cluster and re-raised."""
        lock = self._locks.setdefault(cluster_id, asyncio.Lock())
        async with lock, self.db() as session:
            cluster = await session.get(PveCluster, cluster_id)
            if cluster is None:
                raise LookupError(cluster_id)
            try:
                client = self.client(
                    cluster.api_url, cluster.token_id, cluster.token_secret, cluster.verify_ssl
                )
                snap = await self.read(client)
                if snap.cluster_name != cluster.cluster_name:
                    raise PveError(
                        "other_cluster",
                        f"{cluster.api_url} now answers as cluster {snap.cluster_name!r}, "
                        f"not {cluster.cluster_name!r}",
                    )
            except PveError as exc:
                cluster.last_sync_error = exc.message
                await session.commit()
                log.warning("inventory of cluster %s failed: %s", cluster.cluster_name, exc.message)
                raise
            await apply_snapshot(session, cluster, snap)
            await session.commit()
            return cluster

    async def used_vmids(self, cluster_id: int) -> set[int]:
        client = await self._client_of(cluster_id)
        return await asyncio.to_thread(client.used_vmids)

    async def next_vmid(self, cluster_id: int) -> int:
        client = await self._client_of(cluster_id)
        return await asyncio.to_thread(client.next_vmid)

    async def _client_of(self, cluster_id: int) -> PveClient:
        async with self.db() as session:
            cluster = await session.get(PveCluster, cluster_id)
            if cluster is None:
                raise LookupError(cluster_id)
            return self.client(cluster.api_url, cluster.token_id, cluster.token_secret, cluster.verify_ssl)

    async def run_forever(self) -> None:
        """Refresh every cluster every inventory_refresh_interval seconds."""
        while True:
            await asyncio.sleep(self.config.inventory_refresh_interval)
            try:
                async with self.db() as session:
                    ids = list(await session.scalars(select(PveCluster.id)))
                for cluster_id in ids:
                    try:
                        await self.refresh(cluster_id)
                    except (PveError, LookupError):
                        pass  # recorded on the cluster and logged by refresh()
            except Exception as exc:
                # Before, one failed SELECT ended this loop for good: no refresh after a
                # database restart until the coordinator itself restarted.
                if not unreachable(exc):
                    raise
                OUTAGE.failed("refreshing the inventory", exc)
