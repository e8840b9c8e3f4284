"""Which URLs an agent downloads from (agent/download_policy.py): https only, to a host on
download_hosts (exact, or *.domain for subdomains), an IP address or localhost only when
listed; at most 5 redirects, each checked the same way."""

from __future__ import annotations

import pytest

from agent.download_policy import (
    DEFAULT_DOWNLOAD_HOSTS,
    DownloadRefused,
    HostAllowlist,
    check_url,
    redirect_target,
)
from shared.messages.downloads import url_problem

ALLOW = HostAllowlist.parse("cloud.debian.org, *.example.org 10.0.0.5 [::1]")


@pytest.mark.parametrize(
    "host",
    [
        "cloud.debian.org",
        "CLOUD.debian.org",
        "cloud.debian.org.",
        "a.example.org",
        "x.y.example.org",
        "10.0.0.5",
        "::1",
    ],
)
def test_listed_hosts_and_subdomains_of_a_wildcard_are_allowed(host: str) -> None:
    assert ALLOW.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.org",  # *.example.org is its subdomains only
        "badexample.org",
        "example.org.evil.net",
        "debian.org",
        "evil-cloud.debian.org",
        "localhost",
        "127.0.0.1",
        "10.0.0.6",
        "::2",
        "",
        "cloud.debian.org\n",
    ],
)
def test_anything_else_is_not(host: str) -> None:
    assert not ALLOW.allows(host)


def test_the_default_list_has_the_distributions_and_no_address() -> None:
    default = HostAllowlist.parse(DEFAULT_DOWNLOAD_HOSTS)
    assert default.allows("cloud-images.ubuntu.com") and default.allows("cloud.debian.org")
    assert not default.allows("localhost") and not default.allows("127.0.0.1")
    assert not default.allows("169.254.169.254")


@pytest.mark.parametrize("entry", ["*.10.0.0.5", "exa mple.org/x", "http://a.org", "*"])
def test_a_bad_entry_is_refused_naming_it_and_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="download_hosts"):
        HostAllowlist.parse(f"cloud.debian.org,{entry}")


def test_a_url_of_an_allowed_host_passes() -> None:
    url = "https://cloud.debian.org/images/cloud/debian-13-genericcloud-amd64.qcow2"
    assert check_url(url, ALLOW) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://cloud.debian.org/x.qcow2", "must be an https:// URL"),
        ("ftp://cloud.debian.org/x.qcow2", "must be an https:// URL"),
        ("https://user:pw@cloud.debian.org/x.qcow2", "user name or password"),
        ("https://cloud.debian.org/x.qcow2#part", "#fragment"),
        ("https://cloud.debian.org/x y.qcow2", "spaces"),
        ("https://cloud.debian.org:99999/x.qcow2", "not a valid URL"),
        ("https:///x.qcow2", "no host name"),
        ("https://cloud.debian.org/" + "a" * 2000, "at most 2000 characters"),
        ("https://evil.net/x.qcow2", "host 'evil.net' is not in this agent's download_hosts"),
        ("https://127.0.0.1/x.qcow2", "host '127.0.0.1' is not in this agent's download_hosts"),
    ],
)
def test_a_url_not_allowed_is_a_400_saying_why(url: str, says: str) -> None:
    with pytest.raises(DownloadRefused) as caught:
        check_url(url, ALLOW)
    assert caught.value.status == 400
    assert says in caught.value.message


def test_url_shape_is_the_same_check_on_both_sides() -> None:
    assert url_problem("https://cloud.debian.org/x.qcow2") is None
    assert url_problem("http://cloud.debian.org/x.qcow2") is not None


def test_a_relative_redirect_on_the_same_host_is_followed() -> None:
    target = redirect_target("https://cloud.debian.org/a/latest", "../b/x.qcow2", 1, ALLOW)
    assert target == "https://cloud.debian.org/b/x.qcow2"


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("https://evil.net/x.qcow2", "redirected to https://evil.net/x.qcow2: host 'evil.net'"),
        ("http://cloud.debian.org/x.qcow2", "must be an https:// URL"),
        (None, "without a Location"),
    ],
)
def test_a_redirect_off_the_list_or_to_http_is_a_400(location: str | None, says: str) -> None:
    with pytest.raises(DownloadRefused) as caught:
        redirect_target("https://cloud.debian.org/latest", location, 1, ALLOW)
    assert caught.value.status == 400 and says in caught.value.message


def test_a_sixth_redirect_is_refused() -> None:
    assert redirect_target("https://cloud.debian.org/a", "/b", 5, ALLOW) == "https://cloud.debian.org/b"
    with pytest.raises(DownloadRefused, match="more than 5 redirects"):
        redirect_target("https://cloud.debian.org/a", "/b", 6, ALLOW)
