"""TLS contexts for every link: client -> coordinator, coordinator <-> agent, agent -> agent.

Servers present a certificate and key from their config; clients check the peer's
certificate against a CA file (or the system's trust store) and its host name against
the URL they dialled. On a PVE node the agent's defaults are the node's own certificate
(/etc/pve/local/pve-ssl.pem, issued by the cluster CA /etc/pve/pve-root-ca.pem), so
agents of one cluster trust each other with no extra set-up.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from shared.config import ConfigError


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server's context; ConfigError naming the file when the pair cannot be loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS certificate or key not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert_file} with key {key_file}: {exc}") from None
    return ctx


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client's context that checks certificates against ``ca_file`` (None: the system's CAs)."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except FileNotFoundError:
        raise ConfigError(f"CA file {ca_file} not found") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
