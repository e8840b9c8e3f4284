"""Opening a proxmoxer connection to a PVE API (https + API token), for both services."""

from __future__ import annotations

from urllib.parse import urlsplit

from proxmoxer import ProxmoxAPI

DEFAULT_PORT = 8006


def normalise_api_url(raw: str) -> str:
    """'pve1', 'https://pve1:8006/api2/json' and the like all become 'https://pve1:8006'."""
    text = raw.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme != "https":
        raise ValueError(f"api_url must use https (PVE serves its API over TLS), got {raw!r}")
    if not parts.hostname:
        raise ValueError(f"api_url has no host name: {raw!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"api_url has an invalid port: {raw!r}") from None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{port}"


def split_token_id(token_id: str) -> tuple[str, str]:
    """'root@pam!pvesphere' -> ('root@pam', 'pvesphere')."""
    user, sep, name = token_id.partition("!")
    if not sep or "@" not in user or not name:
        raise ValueError(f"token_id must look like USER@REALM!TOKENNAME, got {token_id!r}")
    return user, name


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
