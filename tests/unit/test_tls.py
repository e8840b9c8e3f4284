"""TLS settings: a certificate or CA file that cannot be used is a configuration error naming
it; a certificate is checked against the CA and the name it was reached by; the coordinator
listens where its settings say, and nowhere when they say nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.listeners import agent_tls, listeners
from pvesim.tls import ensure_certificates
from shared.config import ConfigError
from shared.tls import client_context, refusal, server_context


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, a certificate it issued for 127.0.0.1 and localhost, its key)."""
    return ensure_certificates(tmp_path_factory.mktemp("cluster"), "pve-test")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return ensure_certificates(tmp_path_factory.mktemp("other"), "other-cluster")


def test_a_missing_certificate_or_key_is_named(tmp_path: Path, cluster: tuple[Path, Path, Path]) -> None:
    _, cert, key = cluster
    with pytest.raises(ConfigError, match=f"^tls_cert_file {tmp_path}/nope.pem does not exist$"):
        server_context(tmp_path / "nope.pem", key)
    with pytest.raises(ConfigError, match=f"^tls_key_file {tmp_path}/nope.key does not exist$"):
        server_context(cert, tmp_path / "nope.key")
    with pytest.raises(ConfigError, match=f"^tls_ca_file {tmp_path}/ca.pem does not exist$"):
        client_context(tmp_path / "ca.pem", "tls_ca_file")


def test_files_that_are_not_what_they_should_be_are_named(
    tmp_path: Path, cluster: tuple[Path, Path, Path], other: tuple[Path, Path, Path]
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=f"tls_cert_file {garbage} with tls_key_file .*: not a PEM"):
        server_context(garbage, cluster[2])
    with pytest.raises(ConfigError, match="not a PEM certificate and its key"):
        server_context(cluster[1], other[2])  # a key that is not the certificate's
    with pytest.raises(ConfigError, match=f"agent_ca_file {garbage}: not a PEM certificate bundle"):
        client_context(garbage, "agent_ca_file")


def test_a_certificate_is_checked_against_the_ca_and_the_name_dialled(
    cluster: tuple[Path, Path, Path], other: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = cluster
    served = server_context(cert, key)
    assert refusal(served, client_context(ca, "tls_ca_file"), "127.0.0.1") is None
    assert refusal(served, client_context(ca, "tls_ca_file"), "localhost") is None
    wrong_name = refusal(served, client_context(ca, "tls_ca_file"), "pve9.example")
    assert wrong_name is not None and "Hostname mismatch" in wrong_name
    assert refusal(served, client_context(other[0], "tls_ca_file"), "127.0.0.1") == (
        "certificate verify failed: unable to get local issuer certificate"
    )


def test_the_coordinator_needs_a_listener() -> None:
    with pytest.raises(ConfigError, match="nothing to listen on: set tls_cert_file and tls_key_file"):
        listeners(CoordinatorConfig())


def test_plain_http_listens_on_loopback_only(cluster: tuple[Path, Path, Path]) -> None:
    _, cert, key = cluster
    (plain,) = listeners(CoordinatorConfig(host="0.0.0.0", plain_http_port=8080))
    assert (plain.url, plain.tls) == ("http://127.0.0.1:8080", None)
    https, plain = listeners(
        CoordinatorConfig(
            host="0.0.0.0", port=8443, tls_cert_file=cert, tls_key_file=key, plain_http_port=8080
        )
    )
    assert https.url == "https://0.0.0.0:8443" and https.tls is not None
    assert plain.url == "http://127.0.0.1:8080"


def test_agents_are_checked_against_agent_ca_file_or_else_pve_ca_file(
    tmp_path: Path, cluster: tuple[Path, Path, Path], other: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = cluster
    agent = server_context(cert, key)
    assert refusal(agent, agent_tls(CoordinatorConfig(agent_ca_file=ca)), "127.0.0.1") is None
    assert refusal(agent, agent_tls(CoordinatorConfig(pve_ca_file=str(ca))), "127.0.0.1") is None
    wrong = CoordinatorConfig(agent_ca_file=other[0], pve_ca_file=str(ca))  # agent_ca_file wins
    assert refusal(agent, agent_tls(wrong), "127.0.0.1") is not None
    with pytest.raises(ConfigError, match="pve_ca_file .* does not exist"):
        agent_tls(CoordinatorConfig(pve_ca_file=str(tmp_path / "gone.pem")))
    with pytest.raises(ConfigError, match="agent_ca_file is not set: .*/etc/pve/pve-root-ca.pem"):
        agent_tls(CoordinatorConfig())
