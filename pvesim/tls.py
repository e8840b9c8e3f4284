"""The cluster CA and the certificates it issues (created once per state directory).

PVE keeps a cluster CA (pve-root-ca.pem) and signs each node's pve-ssl.pem with it; clients
verify against the CA. Here one certificate serves the emulated API of every node (one
process); each node also gets its own pve-ssl.pem, which its agent presents.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


# Names every server certificate carries; the address the API listens on is added to them.
DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_names(hosts: Sequence[str] = ()) -> list[str]:
    """The SANs of the server certificate: the defaults plus each concrete listen address.

    A wildcard address (0.0.0.0, ::) is not a name a client connects to, so it is left out.
    """
    names = list(DEFAULT_NAMES)
    for host in hosts:
        try:
            if ipaddress.ip_address(host).is_unspecified:
                continue
        except ValueError:
            pass
        if host and host not in names:
            names.append(host)
    return names


def certificate_names(cert_path: Path) -> set[str]:
    """The IP addresses and DNS names in a certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def _make_ca(cluster_name: str, now: dt.datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox Virtual Environment"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"pvesim {cluster_name}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Manager CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _issue_server_cert(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    names: list[str],
    now: dt.datetime,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Node"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _load_ca(state_dir: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate] | None:
    ca_path, ca_key_path = state_dir / "ca.pem", state_dir / "tls" / "ca-key.pem"
    if not (ca_path.exists() and ca_key_path.exists()):
        return None
    loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded, x509.load_pem_x509_certificate(ca_path.read_bytes())


def _write_pair(cert_path: Path, key_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificates(
    state_dir: Path, cluster_name: str, hosts: Sequence[str] = ()
) -> tuple[Path, Path, Path]:
    """Create DIR/ca.pem and DIR/tls/{server.pem,server-key.pem} if missing; return
    (ca, cert, key) paths.

    The server certificate names 127.0.0.1, ::1, localhost and each of ``hosts`` (the
    address the API listens on). When an existing certificate lacks one of them, a new
    one is issued by the same CA, so clients that trust ca.pem keep trusting the server.
    """
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    ca_path = state_dir / "ca.pem"
    cert_path = tls_dir / "server.pem"
    key_path = tls_dir / "server-key.pem"
    names = server_names(hosts)
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        if set(names) <= certificate_names(cert_path):
            return ca_path, cert_path, key_path

    now = dt.datetime.now(dt.UTC)
    ca = _load_ca(state_dir)
    if ca is None:
        ca = _make_ca(cluster_name, now)
        _write_private(tls_dir / "ca-key.pem", _key_pem(ca[0]))
        ca_path.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    key, cert = _issue_server_cert(*ca, "localhost", names, now)
    _write_pair(cert_path, key_path, key, cert)
    return ca_path, cert_path, key_path


def ensure_node_certificate(state_dir: Path, node: str, hosts: Sequence[str] = ()) -> tuple[Path, Path]:
    """DIR/nodes/NODE/pve-ssl.pem and pve-ssl.key, as a PVE node keeps them in
    /etc/pve/nodes/NODE/ (and /etc/pve/local/): issued by the cluster CA (DIR/ca.pem, PVE's
    pve-root-ca.pem) for the node's name, localhost and each of ``hosts``."""
    node_dir = state_dir / "nodes" / node
    node_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = node_dir / "pve-ssl.pem", node_dir / "pve-ssl.key"
    return ensure_issued_certificate(state_dir, cert_path, key_path, node, hosts)


def ensure_issued_certificate(
    state_dir: Path, cert_path: Path, key_path: Path, name: str, hosts: Sequence[str] = ()
) -> tuple[Path, Path]:
    """A server certificate at ``cert_path`` (key: ``key_path``, 0600) issued by the cluster CA
    of ``state_dir`` for ``name``, localhost and each of ``hosts``: a node's, or another
    service's that clients check against the same CA (the demo's coordinator).

    Reissued when a name is missing (the service moved to another address). Needs the CA,
    which the emulator makes when it first starts.
    """
    ca = _load_ca(state_dir)
    if ca is None:
        raise FileNotFoundError(f"no cluster CA in {state_dir}: start the emulator once first")
    names = [name, *server_names(hosts)]
    if cert_path.exists() and key_path.exists() and set(names) <= certificate_names(cert_path):
        return cert_path, key_path
    key, cert = _issue_server_cert(*ca, name, names, dt.datetime.now(dt.UTC))
    _write_pair(cert_path, key_path, key, cert)
    return cert_path, key_path


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint as PVE prints it (upper-case hex pairs joined by ':')."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
