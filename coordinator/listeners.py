"""Where the coordinator listens, and how it checks the agents' certificates.

HTTPS on host:port with tls_cert_file and tls_key_file serves everyone: users, scripts and
agents. Plain HTTP only where the admin asks for it (plain_http_port), and then on loopback
only, where no bearer token crosses a network: local scripts, a reverse proxy on the same
host, the demo's guide. With neither, the coordinator does not start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from coordinator.config import CoordinatorConfig
from coordinator.errors import CoordinatorError
from coordinator.jobs.engine import JOB_STOP_WAIT
from shared.config import ConfigError
from shared.tls import client_context, server_context

log = logging.getLogger(__name__)
PLAIN_HTTP_HOST = "127.0.0.1"
# A graceful stop (SIGTERM; systemd allows 30 s): requests in flight get REQUEST_GRACE (an
# upload cut then is cleaned up by the next start's janitor), running jobs JOB_STOP_WAIT to
# hand back their leases, so that the next coordinator takes them over at once.
REQUEST_GRACE = 5.0
STOP_DEADLINE = REQUEST_GRACE + 2 * JOB_STOP_WAIT


class ListenError(CoordinatorError):
    """A listener's address could not be bound (the message names it)."""


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls: ssl.SSLContext | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def listeners(config: CoordinatorConfig) -> list[Listener]:
    """The listeners ``config`` asks for; ConfigError when it asks for none or a certificate
    cannot be loaded."""
    found = []
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        served = server_context(config.tls_cert_file, config.tls_key_file)
        found.append(Listener(config.host, config.port, served))
    if config.plain_http_port:
        found.append(Listener(PLAIN_HTTP_HOST, config.plain_http_port, None))
    if not found:
        raise ConfigError(
            f"nothing to listen on: set tls_cert_file and tls_key_file (HTTPS on port {config.port}), "
            f"or plain_http_port for plain HTTP on {PLAIN_HTTP_HOST} only"
        )
    return found


def agent_tls(config: CoordinatorConfig) -> ssl.SSLContext:
    """How agents' certificates are checked: against agent_ca_file (by default pve_ca_file)
    and the host name in the URL each agent registered with."""
    if config.agent_ca_file is not None:
        return client_context(config.agent_ca_file, "agent_ca_file")
    if config.pve_ca_file:
        return client_context(Path(config.pve_ca_file), "pve_ca_file (the default of agent_ca_file)")
    raise ConfigError(
        "agent_ca_file is not set: set it to the CA that issued the agents' certificates, on PVE "
        "each managed cluster's /etc/pve/pve-root-ca.pem (several: concatenated)"
    )


async def serve(app: web.Application, on: list[Listener]) -> None:
    """Serve ``app`` on every listener until SIGTERM or SIGINT, then stop cleanly."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=REQUEST_GRACE)
    await runner.setup()
    try:
        for listener in on:
            try:
                await web.TCPSite(runner, listener.host, listener.port, ssl_context=listener.tls).start()
            except OSError as exc:
                raise ListenError(f"cannot listen on {listener.url}: {exc.strerror}") from None
        log.info(
            "listening on %s",
            ", ".join(f"{one.url}{'' if one.tls else ' (plain HTTP, loopback only)'}" for one in on),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping (within %.0f s): requests in flight get %.0f s", STOP_DEADLINE, REQUEST_GRACE)
    finally:
        await runner.cleanup()
