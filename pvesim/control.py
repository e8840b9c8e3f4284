"""The /pvesim control API (not part of PVE): fault injection and node power, for tests.

Authenticated like the pvesh shim: `Authorization: PVESimRoot=<contents of root.secret>`.

    GET    /pvesim/faults                 list active faults
    POST   /pvesim/faults                 add one (JSON, see README.md) -> {"id": N}; a task
                                          fault with "crash": true kills the worker after its
                                          "delay" (a create is left at `lock: create`); an
                                          http fault with "answer": {...} answers 200 with
                                          that body instead of doing the call
    DELETE /pvesim/faults[/{id}]          clear all faults / one fault
    GET    /pvesim/nodes                  [{"node": ..., "online": 0|1}]
    POST   /pvesim/nodes/{node}/offline   the node becomes unreachable
    POST   /pvesim/nodes/{node}/online    ... and comes back (uptime restarts)
    GET    /pvesim/settings               current knobs
    POST   /pvesim/settings               {"import_rate_limit": bytes/s or 0,
                                           "auth_failure_delay": seconds,
                                           "storage_free": {node: {storage: bytes or null}}}
                                          (storage_free: at most that much space left there;
                                          null: the storage's real free space again)
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from pvesim.appkeys import ACCESS_KEY, CLUSTER_KEY, FAULTS_KEY
from pvesim.auth import ROOT_AUTH_NAME, extract_auth_value


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _authorized(request: web.Request) -> bool:

    secret = extract_auth_value(request.headers.get("Authorization"), ROOT_AUTH_NAME) or ""
    return hmac.compare_digest(request.app[ACCESS_KEY].root_secret(), secret)


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/pvesim/") and not _authorized(request):
        return _json({"error": "root secret required"}, 401)
    return await handler(request)


async def list_faults(request: web.Request) -> web.Response:

    return _json([f.view() for f in request.app[FAULTS_KEY].faults])


async def add_fault(request: web.Request) -> web.Response:

    try:
        spec = await request.json()
        fault = request.app[FAULTS_KEY].add(spec)
    except (ValueError, KeyError, TypeError) as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"id": fault.id})


async def clear_faults(request: web.Request) -> web.Response:

    fid = request.match_info.get("id")
    request.app[FAULTS_KEY].clear(int(fid) if fid else None)
    return _json({"ok": 1})


async def list_nodes(request: web.Request) -> web.Response:

    cluster = request.app[CLUSTER_KEY]
    return _json([{"node": n, "online": int(cluster.online[n])} for n in cluster.nodes])


async def set_node(request: web.Request) -> web.Response:

    cluster = request.app[CLUSTER_KEY]
    node = request.match_info["node"]
    if node not in cluster.online:
        return _json({"error": f"no such node '{node}'"}, 404)
    cluster.set_online(node, request.match_info["state"] == "online")
    return _json({"node": node, "online": int(cluster.online[node])})


async def get_settings(request: web.Request) -> web.Response:

    cluster = request.app[CLUSTER_KEY]
    return _json(
        {
            "import_rate_limit": cluster.import_rate_limit or 0,
            "auth_failure_delay": cluster.config.get("auth_failure_delay", 3),
            "storage_free": {
                node: {sid: s.free_limit[node] for sid, s in cluster.storages.items() if node in s.free_limit}
                for node in cluster.nodes
            },
        }
    )


async def set_settings(request: web.Request) -> web.Response:

    cluster = request.app[CLUSTER_KEY]
    try:
        spec = await request.json()
        if "import_rate_limit" in spec:
            cluster.import_rate_limit = int(spec["import_rate_limit"]) or None
        if "auth_failure_delay" in spec:
            cluster.config["auth_failure_delay"] = float(spec["auth_failure_delay"])
        for node, limits in dict(spec.get("storage_free") or {}).items():
            if node not in cluster.online:
                raise ValueError(f"no such node '{node}'")
            for sid, free in dict(limits).items():
                storage = cluster.storages.get(sid)
                if storage is None:
                    raise ValueError(f"storage '{sid}' does not exist")
                if free is None:
                    storage.free_limit.pop(node, None)
                else:
                    storage.free_limit[node] = max(int(free), 0)
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, 400)
    return await get_settings(request)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(_guard)
    app.router.add_get("/pvesim/faults", list_faults)
    app.router.add_post("/pvesim/faults", add_fault)
    app.router.add_delete("/pvesim/faults", clear_faults)
    app.router.add_delete("/pvesim/faults/{id:\\d+}", clear_faults)
    app.router.add_get("/pvesim/nodes", list_nodes)
    app.router.add_post("/pvesim/nodes/{node}/{state:online|offline}", set_node)
    app.router.add_get("/pvesim/settings", get_settings)
    app.router.add_post("/pvesim/settings", set_settings)
