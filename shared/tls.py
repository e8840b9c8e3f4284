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


def _readable(path: Path, setting: str) -> None:
    """ConfigError naming ``setting`` and the file when it cannot be read (ssl's own errors
    name neither)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{setting} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{setting} {path} cannot be read: {exc.strerror}") from None


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server's context from ``tls_cert_file`` and ``tls_key_file``; ConfigError naming
    the file when the pair cannot be loaded."""
    _readable(cert_file, "tls_cert_file")
    _readable(key_file, "tls_key_file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_cert_file {cert_file} with tls_key_file {key_file}: not a PEM certificate "
            f"and its key ({exc.reason or exc})"
        ) from None
    return ctx


def client_context(ca_file: Path | None, setting: str) -> ssl.SSLContext:
    """A client's context that checks certificates and host names against ``ca_file`` (the
    setting named ``setting``; None: the system's trust store)."""
    if ca_file is not None:
        _readable(ca_file, setting)
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        reason = exc.reason or exc
        raise ConfigError(f"{setting} {ca_file}: not a PEM certificate bundle ({reason})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def download_context(extra_ca_file: Path | None, setting: str) -> ssl.SSLContext:
    """A client's context for downloads from the internet: the system's trust store, plus
    ``extra_ca_file`` (the setting named ``setting``; an internal mirror's CA) when set."""
    ctx = client_context(None, setting)
    if extra_ca_file is not None:
        _readable(extra_ca_file, setting)
        try:
            ctx.load_verify_locations(cafile=str(extra_ca_file))
        except ssl.SSLError as exc:
            reason = exc.reason or exc
            raise ConfigError(f"{setting} {extra_ca_file}: not a PEM certificate bundle ({reason})") from None
    return ctx


def untrusted_certificate(exc: BaseException) -> str | None:
    """Why the peer's certificate was refused, when that is what ``exc`` (or what caused it)
    is about: "certificate verify failed: unable to get local issuer certificate"."""
    seen: BaseException | None = exc
    while seen is not None:
        # (aiohttp's ClientConnectorCertificateError is one too, without the details)
        message = getattr(seen, "verify_message", None)
        if isinstance(seen, ssl.SSLCertVerificationError) and message:
            return f"certificate verify failed: {message}"
        seen = seen.__cause__ or seen.__context__
    return None


def refusal(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> str | None:
    """Why a client using ``client`` would refuse a server using ``server`` that it reached
    as ``host``; None when it would not. A TLS handshake in memory: no network needed."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    ends = [
        client.wrap_bio(client_in, client_out, server_hostname=host),
        server.wrap_bio(server_in, server_out, server_side=True),
    ]
    finished: set[int] = set()
    for _ in range(8):  # TLS 1.2 needs 4 flights, 1.3 fewer
        for i, end in enumerate(ends):
            if i in finished:
                continue
            try:
                end.do_handshake()
                finished.add(i)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return untrusted_certificate(exc) or str(exc)
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if len(finished) == 2:
            return None
    return "the TLS handshake did not finish"
