"""The HTTPS server: PVE's request pipeline for /api2/json/... plus the /pvesim control API.

The order of the steps follows pve-http-server (AnyEvent.pm handle_api2_request) and
pve-manager (HTTPServer.pm auth_handler/rest_handler): authenticate, find the handler (501),
proxy to the node (unknown node: hostname lookup error; offline node: 595), validate the
parameters (400), run the handler, format the answer as {"data": ...}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from email.utils import formatdate
from typing import Any

from aiohttp import web

from pvesim import control, schema
from pvesim.api import Request, load_handlers
from pvesim.api.tasks import Download
from pvesim.appkeys import ACCESS_KEY, CLUSTER_KEY, FAULTS_KEY, TASKS_KEY
from pvesim.auth import ROOT_AUTH_NAME, AccessStore, AuthFailure, Principal, extract_auth_value
from pvesim.errors import ApiError, die, param_error
from pvesim.faults import FaultRegistry
from pvesim.state import Cluster
from pvesim.tasks import TaskManager

log = logging.getLogger("pvesim.server")

NODE_HEADER = "X-Pvesim-Node"  # the pvesh shim says which node it runs on
WORKER_HEADER = "X-Pvesim-Worker"  # set when the call started a worker task (for the shim)
# calls PVE answers without authentication (HTTPServer.pm auth_handler)
NO_AUTH = {
    ("GET", "/access/domains"),
    ("GET", "/access/ticket"),
    ("POST", "/access/ticket"),
    ("POST", "/access/vncticket"),
    ("POST", "/access/openid/login"),
    ("POST", "/access/openid/auth-url"),
}


def decode_urlencoded(data: str) -> dict[str, Any]:
    """AnyEvent.pm decode_urlencoded (repeated keys become lists)."""
    res: dict[str, Any] = {}
    if not data:
        return res
    for kv in data.replace(";", "&").split("&"):
        if not kv:
            continue
        parts = kv.split("=")
        key = urllib.parse.unquote_plus(parts[0])
        if len(parts) < 2:
            res[key] = None
            continue
        value = urllib.parse.unquote_plus(parts[1])
        old = res.get(key)
        # A repeated key (PVE's list parameters) collects its values in order.
        res[key] = value if old is None else [*old, value] if isinstance(old, list) else [old, value]
    return res


def _headers() -> dict[str, str]:
    now = formatdate(usegmt=True)
    return {
        "Server": "pve-api-daemon/3.0",
        "Date": now,
        "Expires": now,
        "Cache-Control": "max-age=0",
        "Pragma": "no-cache",
    }


def json_response(status: int, reason: str | None, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        reason=reason,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        charset="UTF-8",
        headers=_headers(),
    )


def error_response(err: ApiError) -> web.Response:
    if err.status in (595, 596, 597, 598, 599):
        # a failed proxy connection (AnyEvent::HTTP status), no PVE body
        return web.Response(status=err.status, reason=err.reason, headers=_headers())
    body: dict[str, Any] = {"data": None}
    if err.errors:
        body["errors"] = err.errors
    body["message"] = err.message
    return json_response(err.status, err.reason, body)


class Api:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.schema = schema.load()
        self.handlers = load_handlers()

    @property
    def cluster(self) -> Cluster:
        return self.app[CLUSTER_KEY]

    def authenticate(self, request: web.Request, method: str, rel: str) -> Principal | None:
        access = self.app[ACCESS_KEY]
        header = request.headers.get("Authorization")
        root = extract_auth_value(header, ROOT_AUTH_NAME)
        if root:
            return access.verify_root_secret(root)
        if (method, rel) in NO_AUTH:
            return None
        ticket = extract_auth_value(request.headers.get("Cookie"), "PVEAuthCookie")
        ticket = ticket or extract_auth_value(header, "PVEAuthCookie")
        if ticket:
            raise AuthFailure("ticket authentication is not emulated, use an API token")
        api_token = extract_auth_value(header, "PVEAPIToken")
        if not api_token:
            raise NoTicket()
        return access.verify_token(api_token)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        method = request.method
        fmt = request.match_info["fmt"]
        rel = "/" + request.match_info.get("tail", "").strip("/")
        user = "-"
        try:
            if fmt != "json":
                raise ApiError(501, "no such uri")
            try:
                principal = self.authenticate(request, method, rel)
            except NoTicket:
                return await self.unauthorized("No ticket")
            except AuthFailure as exc:
                log.warning("authentication failure: %s", exc)
                return await self.unauthorized("Authentication failed!")
            if principal is None:
                raise ApiError(501, f"Method '{method} {rel}' not implemented")
            user = principal.userid
            local_node = self.cluster.nodes[0]
            if principal.cli and request.headers.get(NODE_HEADER) in self.cluster.online:
                local_node = request.headers[NODE_HEADER]
            if not self.cluster.online[local_node]:
                # the node that would answer is down: the connection just breaks
                if request.transport:
                    request.transport.close()
                raise ConnectionResetError()
            response = await self.dispatch(request, method, rel, principal, local_node)
        except ApiError as err:
            response = error_response(err)
        except ConnectionResetError:
            raise
        except Exception as exc:  # noqa: BLE001 - PVE answers any other failure with a 500
            log.exception("internal error on %s %s", method, rel)
            response = error_response(die(str(exc)))
        log.debug(
            "%s %s %s %s %.3fs",
            user,
            method,
            request.path_qs,
            response.status,
            time.monotonic() - started,
        )
        return response

    async def unauthorized(self, reason: str) -> web.Response:
        # pve-http-server delays every unauthorized answer by 3 seconds
        delay = float(self.cluster.config.get("auth_failure_delay", 3))
        if delay > 0:
            await asyncio.sleep(delay)
        return web.Response(status=401, reason=reason, headers=_headers())

    async def read_params(self, request: web.Request, method: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.content_length:
            if method not in ("PUT", "POST"):
                raise ApiError(501, f"Unexpected content for method '{method}'")
            raw = await request.read()
            if request.content_type == "application/json":
                try:
                    decoded = json.loads(raw or b"null")
                except ValueError as exc:
                    raise die(f"malformed JSON string: {exc}") from None
                if not isinstance(decoded, dict):
                    raise param_error({"_root": "an object is required"})
                params = decoded
            else:
                params = decode_urlencoded(raw.decode("utf-8", errors="replace"))
        params.update(decode_urlencoded(request.query_string))
        params.pop("_dc", None)  # ExtJS' cache buster
        return params

    async def dispatch(
        self,
        request: web.Request,
        method: str,
        rel: str,
        principal: Principal,
        local_node: str,
    ) -> web.StreamResponse:
        cluster = self.cluster
        answer = await self.app[FAULTS_KEY].check_http(method, rel)
        if answer is not None:
            return json_response(200, None, answer)
        ms, uri_params = self.schema.match(method, rel)
        params = await self.read_params(request, method)
        for key, value in params.items():
            if key in uri_params and uri_params[key] != value:
                raise param_error(
                    {key: "duplicate parameter (already defined in URI) with conflicting values!"}
                )
        params.update(uri_params)
        if ms.proxyto == "node" and "node" in uri_params:
            node = uri_params["node"]
            if node == "localhost":
                params["node"] = node = local_node
            if node not in cluster.online:
                raise die(
                    f"hostname lookup '{node}' failed - failed to get address info for: {node}:"
                    " Name or service not known"
                )
            if not cluster.online[node]:
                raise ApiError(595, "No route to host")
        values = schema.validate(ms, params)
        if values.get("node") == "localhost":
            values["node"] = local_node
        req = Request(
            cluster=cluster,
            tasks=self.app[TASKS_KEY],
            principal=principal,
            local_node=local_node,
        )
        handler = self.handlers[(ms.path, ms.method)]
        data = await handler(req, values)
        if isinstance(data, Download):
            return web.Response(
                text=data.text,
                content_type="text/plain",
                headers={"Content-Disposition": f'attachment; filename="{data.filename}"'},
            )
        body: dict[str, Any] = {"data": data}
        if req.total:
            body["total"] = req.total
        response = json_response(200, None, body)
        if req.worker_upid:
            response.headers[WORKER_HEADER] = req.worker_upid
        return response


class NoTicket(Exception):
    pass


async def not_found(request: web.Request) -> web.Response:
    return web.Response(status=501, reason="no such file", text="no such file\n")


def build_app(
    cluster: Cluster, tasks: TaskManager, access: AccessStore, faults: FaultRegistry
) -> web.Application:
    app = web.Application(client_max_size=512 * 1024)
    app[CLUSTER_KEY] = cluster
    app[TASKS_KEY] = tasks
    app[ACCESS_KEY] = access
    app[FAULTS_KEY] = faults
    api = Api(app)
    app.router.add_route("*", r"/api2/{fmt}/{tail:.*}", api.handle)
    app.router.add_route("*", r"/api2/{fmt}", api.handle)
    control.add_routes(app)
    app.router.add_route("*", r"/{tail:.*}", not_found)
    return app
