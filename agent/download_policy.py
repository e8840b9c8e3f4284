"""Which URLs this agent downloads from (pure; agent/downloader.py applies it).

The agent runs as root and the URL comes from an API user: it is treated as hostile. Only
https, only to a host on ``download_hosts`` (an allowlist: an exact name, or ``*.example.org``
for that domain's subdomains), checked before any connection is made and again for every
redirect. An IP address or ``localhost`` is allowed only when it is listed itself (a
wildcard never matches one), so a URL cannot point the agent at the node's own services or
the cluster's private network unless an administrator said so.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from agent.upload_ops import UploadOpFailed
from shared.error_slugs import ErrorSlug
from shared.messages.downloads import url_problem

# The major distributions' cloud-image hosts (and GitHub's release downloads).
DEFAULT_DOWNLOAD_HOSTS = (
    "cloud.debian.org, cdimage.debian.org, cloud-images.ubuntu.com, dl.rockylinux.org, "
    "repo.almalinux.org, cloud.centos.org, download.fedoraproject.org, download.opensuse.org, "
    "github.com, objects.githubusercontent.com, release-assets.githubusercontent.com, "
    "factory.talos.dev, stable.release.flatcar-linux.net"
)
SETTING = "download_hosts"
MAX_REDIRECTS = 5
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class DownloadRefused(UploadOpFailed):
    """A URL this agent will not fetch: ``status`` and ``slug`` for the answer."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normal_host(host: str) -> str:
    """A host as compared: lower case, without a trailing dot (``example.org.`` is the same
    name), IPv6 without brackets."""
    return host.lower().rstrip(".").removeprefix("[").removesuffix("]")


@dataclass(frozen=True)
class HostAllowlist:
    exact: frozenset[str]
    domains: tuple[str, ...]  # "*.example.org" kept as ".example.org"

    @classmethod
    def parse(cls, text: str) -> HostAllowlist:
        """``download_hosts``: names separated by commas or spaces; ValueError naming a bad one."""
        exact: set[str] = set()
        domains: list[str] = []
        for raw in re.split(r"[,\s]+", text.strip()):
            if not raw:
                continue
            entry = normal_host(raw)
            wildcard = entry.startswith("*.")
            name = entry[2:] if wildcard else entry
            if _is_ip(name) and not wildcard:
                exact.add(str(ipaddress.ip_address(name)))
            elif HOST_NAME.fullmatch(name) and not _is_ip(name):
                if wildcard:
                    domains.append("." + name)
                else:
                    exact.add(name)
            else:
                raise ValueError(f"{SETTING}: {raw!r} is not a host name, *.domain or IP address")
        return cls(frozenset(exact), tuple(domains))

    def allows(self, host: str) -> bool:
        host = normal_host(host)
        if _is_ip(host):
            return str(ipaddress.ip_address(host)) in self.exact
        if not HOST_NAME.fullmatch(host):
            return False
        return host in self.exact or any(host.endswith(domain) for domain in self.domains)


def check_url(url: str, allow: HostAllowlist) -> str:
    """``url`` if this agent may fetch it; DownloadRefused (400) naming what is wrong (the
    host and the setting, for a host not allowed)."""
    problem = url_problem(url)
    if problem is not None:
        raise DownloadRefused(400, ErrorSlug.INVALID_REQUEST, f"url {problem}")
    host = urlsplit(url).hostname or ""
    if not allow.allows(host):
        raise DownloadRefused(
            400,
            ErrorSlug.DOWNLOAD_NOT_ALLOWED,
            f"host {host!r} is not in this agent's {SETTING} (an allowlist of host names, "
            "or *.domain; an IP address or localhost only when listed)",
        )
    return url


def redirect_target(current: str, location: str | None, redirects: int, allow: HostAllowlist) -> str:
    """Where a redirect from ``current`` leads (``location``, resolved against it), if this
    agent may follow it: the ``redirects``-th one at most MAX_REDIRECTS, https, to a host
    allowed. DownloadRefused (400) otherwise."""
    if redirects > MAX_REDIRECTS:
        raise DownloadRefused(
            400, ErrorSlug.DOWNLOAD_FAILED, f"more than {MAX_REDIRECTS} redirects (last to {current})"
        )
    if not location:
        raise DownloadRefused(400, ErrorSlug.DOWNLOAD_FAILED, "a redirect without a Location")
    target = urljoin(current, location)
    try:
        return check_url(target, allow)
    except DownloadRefused as exc:
        raise DownloadRefused(exc.status, exc.slug, f"redirected to {target[:200]}: {exc.message}") from None
