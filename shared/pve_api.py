"""Opening a proxmoxer connection to a PVE API (https + API token), for both services.

The shapes of an API address, a token id and a token secret are checked here, before
any connection: what the HTTP client library would choke on (control characters, a
character outside Latin-1 in a header, a port out of range) is named as bad input.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from proxmoxer import ProxmoxAPI

DEFAULT_PORT = 8006
# What the normalised address may take in the database (pve_cluster.api_url).
API_URL_MAX = 255
# A DNS name: labels of letters, digits, '-' and '_' (seen in real host names), dot-separated.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)
# USER@REALM!TOKENNAME in the characters PVE's formats allow that an HTTP header can carry
# (the user name may be an e-mail address, as with LDAP realms).
TOKEN_ID_PATTERN = r"^([A-Za-z0-9._+@-]+@[A-Za-z][A-Za-z0-9._-]*)!([A-Za-z][A-Za-z0-9._-]*)$"
TOKEN_ID_MAX = 129  # pve-userid is at most 64 characters, a token name at most 64
_TOKEN_ID = re.compile(TOKEN_ID_PATTERN)
# PVE makes every token secret a UUID.
_TOKEN_SECRET = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TOKEN_SECRET_PATTERN = "^" + _TOKEN_SECRET.pattern + "$"


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:60] + "...")


def normalise_api_url(raw: str) -> str:
    """'pve1', 'https://pve1:8006/api2/json' and the like all become 'https://pve1:8006'."""
    text = raw.strip()
    # Checked before urlsplit, which silently drops tabs and newlines.
    if any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in text):
        raise ValueError(f"api_url must not contain control characters, got {_shown(raw)}")
    if not text.isascii():
        raise ValueError(
            f"api_url must be ASCII (write an international host name in its xn-- form), got {_shown(raw)}"
        )
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"api_url is not a valid URL ({exc}): {_shown(raw)}") from None
    if parts.scheme != "https":
        raise ValueError(f"api_url must use https (PVE serves its API over TLS), got {_shown(raw)}")
    if not parts.hostname:
        raise ValueError(f"api_url has no host name: {_shown(raw)}")
    if port == 0:
        raise ValueError(f"api_url has an invalid port: {_shown(raw)}")
    host = parts.hostname
    if "[" in parts.netloc:  # an IPv6 literal (without a zone: "%" has no place in a URL's host)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
        if not host or "%" in host:
            raise ValueError(f"api_url has an invalid IPv6 address: {_shown(raw)}")
        host = f"[{host}]"
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError(f"api_url has an invalid host name: {_shown(raw)}")
    url = f"https://{host}:{port or DEFAULT_PORT}"
    if len(url) > API_URL_MAX:
        raise ValueError(f"api_url is longer than {API_URL_MAX} characters")
    return url


def split_token_id(token_id: str) -> tuple[str, str]:
    """'root@pam!pvesphere' -> ('root@pam', 'pvesphere')."""
    match = _TOKEN_ID.fullmatch(token_id)
    if not match or len(token_id) > TOKEN_ID_MAX:
        raise ValueError(f"token_id must look like USER@REALM!TOKENNAME, got {_shown(token_id)}")
    return match[1], match[2]


def check_token_secret(secret: str) -> str:
    """The secret of a PVE API token, which PVE always makes a UUID."""
    if not _TOKEN_SECRET.fullmatch(secret):
        raise ValueError(
            "token_secret must be the API token's secret as PVE shows it, a UUID like "
            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        )
    return secret


def open_https(
    api_url: str, token_id: str, token_secret: str, verify: bool | str, timeout: float
) -> ProxmoxAPI:
    """``verify``: False, True (system CAs) or the path of a CA bundle."""
    parts = urlsplit(normalise_api_url(api_url))
    user, name = split_token_id(token_id)
    return ProxmoxAPI(
        parts.hostname,
        port=parts.port,
        user=user,
        token_name=name,
        token_value=token_secret,
        verify_ssl=verify,
        timeout=timeout,
    )
