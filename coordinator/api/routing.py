"""Declaring an endpoint once.

A resource module creates ``routes = Routes("templates")`` and decorates its
handlers; the decorator records the path, the role it needs, the msgspec
structs of its query, body and response. From that single record
:func:`mount` builds the aiohttp route (auth, validation, envelope) and
:mod:`coordinator.api.openapi` builds the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import msgspec
from aiohttp import web

from coordinator.api.auth import AgentCaller, Principal, authenticate, authenticate_agent
from coordinator.api.errors import ApiError, accepted, success
from shared import json_body
from shared.error_slugs import ErrorSlug
from shared.validation import INT_MAX, Input, InvalidInput, Model, parse

M = TypeVar("M")
D = TypeVar("D")

# "agent": the caller must present its node's agent credential (agents talking to the coordinator).
Role = Literal["viewer", "operator", "admin", "agent"]
API_PREFIX = "/api/v1"
AGENT_API_PREFIX = "/agent-api/v1"
# Every JSON body is a few fields; bigger is a mistake or an attack (decoded, it takes ~10x more).
JSON_BODY_MAX = 64 << 10
_ID = re.compile(r"[0-9]{1,16}")


class NoQuery(Input):
    """The query of a route that takes none: each parameter is refused by name, in data.fields."""


@dataclass
class Call:
    """What a handler gets: the request, who made it, and its validated inputs."""

    request: web.Request
    principal: Principal | None
    path: dict[str, int]
    query: Any
    body: Any
    agent: AgentCaller | None = None  # the calling node, on "agent" endpoints

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def actor(self) -> str:
        """The name recorded as creator/modifier."""
        return self.principal.name if self.principal else ""


Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Accepted(Generic[D]):
    """A handler's answer when the work goes on in the background: HTTP 202 with ``data``
    (an instance of the endpoint's declared ``accepted`` type)."""

    data: D


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    role: Role | None
    query: type[Model] | None = None
    body: type[Model] | None = None
    response: Any = None
    # The data of a 202 answer (the handler returns Accepted(...)), if the endpoint has one.
    accepted: Any = None
    errors: tuple[int, ...] = ()
    # OpenAPI request body for endpoints that read the body themselves (multipart upload).
    raw_body_schema: dict[str, Any] | None = None
    description: str = ""
    path_params: tuple[str, ...] = field(default=())
    # Answers "Expect: 100-continue" (e.g. refuse a too large upload before it is sent).
    expect_handler: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None
    # Who the caller is, when not only by the bearer header (the events WebSocket also takes a
    # ticket: browsers cannot set headers on one); given the request and the role needed.
    auth: Callable[[web.Request, str], Awaitable[Principal]] | None = None
    # A WebSocket endpoint: the type of the messages it sends (for the OpenAPI document).
    websocket: Any = None
    # The OpenAPI responses of an endpoint that answers without the envelope (tus: 201, 204
    # and headers), instead of the envelope's 200.
    raw_responses: dict[str, Any] | None = None
    # Request headers the endpoint reads (tus: Upload-Offset, ...): name -> their OpenAPI
    # parameter object's other keys (required, schema, description).
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


class Routes:
    """The endpoints of one resource module."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def _add(self, method: str, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            params = tuple(re.findall(r"{(\w+)}", path))
            doc = (fn.__doc__ or "").strip()
            summary = kw.pop("summary", None) or doc.split("\n")[0]
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=fn,
                    summary=summary,
                    tag=self.tag,
                    path_params=params,
                    description=doc,
                    **kw,
                )
            )
            return fn

        return deco

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("DELETE", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("PATCH", path, **kw)

    def head(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("HEAD", path, **kw)

    def options(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self._add("OPTIONS", path, **kw)


# ---------------------------------------------------------------- validation


def parse_model(model: type[M], data: Any, where: str) -> M:
    """``data`` as a ``model``, or a 400 naming every bad field (``where``: query, body, form).
    A JSON body is taken as typed; a query's and a form's text converts."""
    try:
        return parse(model, data, strict=where == "body")
    except InvalidInput as exc:
        fields = {loc or where: text for loc, text in exc.fields.items()}
        raise ApiError(
            400, ErrorSlug.INVALID_REQUEST, f"invalid {where}: {exc}", {"fields": fields}
        ) from None


def _refuse_repeated(request: web.Request) -> None:
    """A query parameter given twice is a 400 naming it: no route takes a list, and taking the
    first or the last silently would answer a question the client did not ask."""
    repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
    if repeated:
        raise ApiError(
            400,
            ErrorSlug.INVALID_REQUEST,
            f"invalid query: {', '.join(repeated)} given more than once",
            {"fields": dict.fromkeys(repeated, "is given more than once")},
        )


def _parse_path(request: web.Request, names: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    for name in names:
        raw = request.match_info[name]
        # ASCII digits only: str.isdigit() also takes "²", which int() then refuses
        if not _ID.fullmatch(raw) or not 1 <= int(raw) <= INT_MAX:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise ApiError(
                400,
                ErrorSlug.INVALID_REQUEST,
                f"{name} must be a positive integer, at most {INT_MAX} (got {shown!r})",
                {"fields": {name: f"must be a positive integer, at most {INT_MAX}"}},
            )
        values[name] = int(raw)
    return values


async def _read_json(request: web.Request) -> Any:
    too_large = ApiError(
        413, ErrorSlug.TOO_LARGE, f"a JSON request body may have at most {JSON_BODY_MAX} bytes"
    )
    if (request.content_length or 0) > JSON_BODY_MAX:
        raise too_large
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > JSON_BODY_MAX:
            raise too_large
    if not raw.strip():
        return {}
    try:
        return json_body.decode(bytes(raw))
    except json_body.BadJson as exc:
        message = f"invalid body: {exc.where}: {exc.message}" if exc.where else exc.message
        raise ApiError(
            400, ErrorSlug.INVALID_JSON, message, {"fields": {exc.where or "body": exc.message}}
        ) from None


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = agent = None
        if endpoint.role == "agent":
            agent = await authenticate_agent(request)
        elif endpoint.role is not None:
            principal = await (endpoint.auth or authenticate)(request, endpoint.role)
        path = _parse_path(request, endpoint.path_params)
        _refuse_repeated(request)
        query = None
        if endpoint.query is not None:
            query = parse_model(endpoint.query, dict(request.query), "query")
        elif request.query:
            parse_model(NoQuery, dict(request.query), "query")  # raises: it names each parameter
        body = None
        if endpoint.body is not None:
            body = parse_model(endpoint.body, await _read_json(request), "body")
        result = await endpoint.handler(Call(request, principal, path, query, body, agent))
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Accepted):
            return accepted(msgspec.to_builtins(result.data, builtin_types=(datetime,)))
        # datetimes stay as they are: success() writes them in the API's one format
        return success(msgspec.to_builtins(result, builtin_types=(datetime,)))

    handle.__name__ = endpoint.handler.__name__
    return handle


def mount(app: web.Application, groups: list[Routes], prefix: str = API_PREFIX) -> list[Endpoint]:
    """Add every endpoint under ``prefix``; returns them (for the OpenAPI document)."""
    endpoints = [ep for group in groups for ep in group.endpoints]
    # Literal paths first, so /templates/sync-tasks is not taken for /templates/{id}.
    ordered = sorted(endpoints, key=lambda ep: "{" in ep.path)
    for ep in ordered:
        app.router.add_route(ep.method, prefix + ep.path, _wrap(ep), expect_handler=ep.expect_handler)
    return endpoints
