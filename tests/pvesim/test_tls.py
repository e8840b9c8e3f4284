"""The emulator's certificates: the server certificate names the address the API listens on,
and a new listen address gets a new certificate from the same cluster CA."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from pvesim.tls import DEFAULT_NAMES, certificate_names, ensure_certificates


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_default_names(tmp_path: Path) -> None:
    ca, cert, _ = ensure_certificates(tmp_path, "pve-test")
    assert certificate_names(cert) == set(DEFAULT_NAMES)
    _load(cert).verify_directly_issued_by(_load(ca))


def test_listen_address_is_named(tmp_path: Path) -> None:
    _, cert, _ = ensure_certificates(tmp_path, "pve-test", ["10.77.0.1", "pve.example"])
    assert certificate_names(cert) == {*DEFAULT_NAMES, "10.77.0.1", "pve.example"}


def test_wildcard_address_is_not_a_name(tmp_path: Path) -> None:
    _, cert, _ = ensure_certificates(tmp_path, "pve-test", ["0.0.0.0", "::"])
    assert certificate_names(cert) == set(DEFAULT_NAMES)


def test_new_address_reissues_from_the_same_ca(tmp_path: Path) -> None:
    ca, cert, key = ensure_certificates(tmp_path, "pve-test")
    ca_before, key_before = ca.read_bytes(), key.read_bytes()

    ensure_certificates(tmp_path, "pve-test", ["10.77.0.1"])

    assert ca.read_bytes() == ca_before  # clients that trust ca.pem keep trusting the server
    assert key.read_bytes() != key_before
    assert "10.77.0.1" in certificate_names(cert)
    _load(cert).verify_directly_issued_by(_load(ca))


def test_covered_address_keeps_the_certificate(tmp_path: Path) -> None:
    _, cert, key = ensure_certificates(tmp_path, "pve-test", ["10.77.0.1"])
    before = cert.read_bytes(), key.read_bytes()
    ensure_certificates(tmp_path, "pve-test", ["10.77.0.1"])
    ensure_certificates(tmp_path, "pve-test", ["127.0.0.1"])
    assert (cert.read_bytes(), key.read_bytes()) == before
