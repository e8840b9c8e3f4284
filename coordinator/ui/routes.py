"""/ui/: the dashboard's files, read once from static/ at start; nothing else is served.

The files need no token (they hold no data); everything they show comes from /api/v1 with
the user's token. Only names found in static/ at start exist, so no request path reaches
the file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from coordinator.ui.headers import CONTENT_TYPES, page_headers

STATIC = Path(__file__).with_name("static")
PREFIX = "/ui"
INDEX = "index.html"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load(directory: Path = STATIC) -> dict[str, StaticFile]:
    """Every file of ``directory`` with a known suffix, by name."""
    return {
        path.name: StaticFile(path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def add_routes(app: web.Application, directory: Path = STATIC) -> None:
    files = load(directory)

    def answer(name: str, request: web.Request) -> web.Response:
        found = files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        headers = page_headers(request.host, found.content_type, revalidate=name != INDEX)
        return web.Response(body=found.body, headers=headers)

    async def index(request: web.Request) -> web.Response:
        return answer(INDEX, request)

    async def one_file(request: web.Request) -> web.Response:
        return answer(request.match_info["name"], request)

    async def to_index(request: web.Request) -> web.Response:
        # The query goes along: /ui?token=... is a login link too.
        query = request.rel_url.raw_query_string
        raise web.HTTPPermanentRedirect(PREFIX + "/" + (f"?{query}" if query else ""))

    app.router.add_get(PREFIX, to_index)
    app.router.add_get(PREFIX + "/", index)
    app.router.add_get(PREFIX + "/{name}", one_file)
