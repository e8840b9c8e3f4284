"""/ui/: the dashboard's files as the coordinator serves them (content types, the CSP and the
headers around it), and what the files are allowed to hold under that CSP."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import requests

from coordinator.ui.routes import STATIC
from tests.support.inprocess import InProcess

EXPECTED_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "token-link.js": "text/javascript; charset=utf-8",
    "main.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


def get(coordinator: InProcess, path: str, **kw: object) -> requests.Response:
    return requests.get(coordinator.url + path, timeout=10, **kw)  # type: ignore[arg-type]


class Page(HTMLParser):
    """What index.html loads, and anything the CSP would refuse in it."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if not named.get("src"):
                self.inline.append("<script> without src")
        for attr in ("src", "href"):
            if tag in ("script", "link") and named.get(attr):
                self.loads.append(str(named[attr]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"script body {data.strip()[:40]!r}")


def test_every_file_is_served_with_its_type_and_the_page_is_held_to_its_origin(
    coordinator: InProcess,
) -> None:
    host = coordinator.url.removeprefix("http://")
    for name, content_type in EXPECTED_TYPES.items():
        reply = get(coordinator, "/ui/" + ("" if name == "index.html" else name))
        assert reply.status_code == 200, name
        assert reply.headers["Content-Type"] == content_type, name
        assert reply.content == (STATIC / name).read_bytes()
        assert reply.headers["Content-Security-Policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["X-Frame-Options"] == "DENY"
        # The page may be asked for with a login link's token in its address: never kept.
        assert reply.headers["Cache-Control"] == ("no-store" if name == "index.html" else "no-cache")


def test_a_login_link_without_the_slash_keeps_its_query_and_unknown_names_are_404(
    coordinator: InProcess,
) -> None:
    reply = get(coordinator, "/ui?token=a%26b%2Bc&x=1", allow_redirects=False)
    assert reply.status_code == 308 and reply.headers["Location"] == "/ui/?token=a%26b%2Bc&x=1"
    for path in ("/ui/nothing.js", "/ui/..%2Fapp.py", "/ui/routes.py", "/ui/%2e%2e/headers.py", "/ui/static"):
        reply = get(coordinator, path)
        assert reply.status_code == 404, path
        assert reply.json()["data"]["error"] == "route_not_found"


def test_the_page_holds_no_inline_script_or_style_and_loads_only_its_own_files() -> None:
    page = Page()
    page.feed((STATIC / "index.html").read_text())
    assert page.inline == []
    assert page.loads and all((STATIC / name).is_file() for name in page.loads), page.loads
    # The token link's script comes first and blocks (a classic script, not a module).
    assert page.loads[0] == "token-link.js"
    # Every module the scripts import is shipped, and none is fetched from elsewhere.
    for script in STATIC.glob("*.js"):
        source = script.read_text()
        for imported in re.findall(r'^import .* from "([^"]+)";$', source, re.M):
            assert imported.startswith("./") and (STATIC / imported[2:]).is_file(), (script.name, imported)
        assert "innerHTML" not in source and "eval(" not in source, script.name
        assert not re.search(r"https?://", source), script.name
