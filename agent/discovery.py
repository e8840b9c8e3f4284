"""mDNS/zeroconf announcement (_pvesphere-agent._tcp), for networks where multicast works."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from shared.version import VERSION

log = logging.getLogger(__name__)
SERVICE_TYPE = "_pvesphere-agent._tcp.local."


class Announcer:
    def __init__(self, node: str, cluster: str, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or socket.gethostname()
        try:
            addresses = [socket.inet_aton(socket.gethostbyname(host))]
        except OSError:
            addresses = []
        self.info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{node}.{SERVICE_TYPE}",
            port=parts.port or 80,
            addresses=addresses,
            properties={"node": node, "cluster": cluster, "version": VERSION, "url": url},
            server=f"{node}.local.",
        )
        self.zc: AsyncZeroconf | None = None

    async def start(self) -> None:
        try:
            self.zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            await self.zc.async_register_service(self.info, allow_name_change=True)
            log.info("announced %s via mDNS", self.info.name)
        except (OSError, ValueError) as exc:  # no multicast route: registration still works
            log.warning("mDNS announcement not possible here: %s", exc)
            await self.stop()

    async def stop(self) -> None:
        if self.zc is not None:
            try:
                await self.zc.async_unregister_all_services()
            finally:
                await self.zc.async_close()
                self.zc = None
