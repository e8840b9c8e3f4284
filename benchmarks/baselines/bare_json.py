"""The ceiling any aiohttp route can reach here: one JSON handler, no auth, no database.

``python -m benchmarks.baselines.bare_json PORT`` serves ``GET /`` on 127.0.0.1:PORT on
uvloop (as the coordinator runs) and answers a small JSON object, until SIGTERM. The API
benchmark measures it with the same wrk command as the coordinator's routes, in the same
run, and gives every route's req/s as a ratio to it.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def hello(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": "bare"})


async def serve(port: int) -> None:
    """As coordinator/listeners.py serves: an AppRunner without access log, one TCPSite."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


def main(port: int) -> None:
    uvloop.run(serve(port))


if __name__ == "__main__":
    main(int(sys.argv[1]))
