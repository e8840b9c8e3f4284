"""What the dashboard's files are served with: their content types and the headers that hold
the page to its own origin (pure; routes.py serves them)."""

from __future__ import annotations

import re

# The suffixes the dashboard ships; a file of any other kind is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# A Host header as browsers send it: a name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def content_security_policy(host: str) -> str:
    """Scripts, styles, images and connections from this origin only; no inline script or
    style, no plugins, no framing. The WebSocket of live progress is named explicitly (ws and
    wss on ``host``), as browsers before CSP level 3 do not count it as 'self'; a Host header
    that is not a plain host[:port] adds nothing (it cannot add a directive either)."""
    connect = "'self'"
    if _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def page_headers(host: str, content_type: str, revalidate: bool) -> dict[str, str]:
    """Every dashboard file's headers. ``revalidate`` False: not kept at all (the page, whose
    address may still carry a login link's token when it is asked for)."""
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        # A login link's token is in the page's address until its first script runs: no
        # request the page makes may carry it in a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache" if revalidate else "no-store",
    }
