"""PVE API settings: the shapes checked before any connection is tried."""

from __future__ import annotations

import pytest

from shared.pve_api import check_token_secret, normalise_api_url, split_token_id


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("pve1", "https://pve1:8006"),
        (" https://PVE1.example.com:8006/api2/json ", "https://pve1.example.com:8006"),
        ("https://10.0.0.1:443", "https://10.0.0.1:443"),
        ("[::1]", "https://[::1]:8006"),
        ("https://xn--pve-xoa.example", "https://xn--pve-xoa.example:8006"),
    ],
)
def test_addresses_are_normalised(raw: str, url: str) -> None:
    assert normalise_api_url(raw) == url


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("https://pve1\x00:8006", "control characters"),
        ("https://pve1\n.example", "control characters"),  # urlsplit would drop it silently
        ("https://pvé.example", "xn--"),
        ("http://pve1", "https"),
        ("https://pve1:0", "invalid port"),
        ("https://pve1:65536", "Port out of range"),
        ("https://pve1:80a", "not a valid URL"),
        ("https://pve 1", "invalid host name"),
        ("https://a..b", "invalid host name"),
        ("https://" + "a" * 300, "invalid host name"),
        ("https://[v1.fe]", "invalid IPv6"),
        ("https://[fe80::1%25eth0]", "invalid IPv6"),
        ("https://", "no host name"),
    ],
)
def test_bad_addresses_are_named(raw: str, text: str) -> None:
    with pytest.raises(ValueError, match="api_url") as caught:
        normalise_api_url(raw)
    assert text in str(caught.value)


def test_token_ids() -> None:
    assert split_token_id("root@pam!pvesphere") == ("root@pam", "pvesphere")
    assert split_token_id("svc.bot@pve!ci-2") == ("svc.bot@pve", "ci-2")
    assert split_token_id("ann@example.com@ldap!t") == ("ann@example.com@ldap", "t")
    for bad in ("root", "root@pam!", "root!x", "ro ot@pam!x", "root@pam!x!y", "root@pam!tök€n", "r@pam!1x"):
        with pytest.raises(ValueError, match="USER@REALM!TOKENNAME"):
            split_token_id(bad)


def test_token_secrets_are_uuids() -> None:
    assert check_token_secret("4D1C5B8E-0a4f-4f5e-9d7a-2b1c3d4e5f60")
    for bad in (
        "",
        "secret",
        "ünïcödé",
        "4d1c5b8e-0a4f-4f5e-9d7a-2b1c3d4e5f60\n",
        "4d1c5b8e0a4f4f5e9d7a2b1c3d4e5f60",
    ):
        with pytest.raises(ValueError, match="UUID"):
            check_token_secret(bad)
