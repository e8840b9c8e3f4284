"""The OpenAPI 3.1 document of /api/v1, built from the declared endpoints."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from aiohttp import web

from coordinator.api.auth import authenticate
from coordinator.api.routing import API_PREFIX, Endpoint
from shared.validation import INT_MAX, schema_hook
from shared.version import VERSION

REF = "#/components/schemas/{name}"

_STATUS_TEXT = {
    400: "Bad input (the message names it)",
    401: "Missing or unknown token",
    403: "Token lacks the role",
    404: "Not found",
    409: "State conflict",
    413: "Too large",
    415: "Unsupported file format",
    422: "Image rejected by validation",
    426: "A WebSocket route asked without 'Upgrade: websocket'",
    429: "Rate limited",
    502: "Proxmox VE (or an agent) did not answer as expected",
    503: "No live agent for the needed node",
    507: "No space (the message names the node and what is full)",
    504: "Proxmox VE did not answer in time",
}

RETRY_AFTER_HEADER = {
    "description": "seconds after which asking again may succeed",
    "schema": {"type": "integer", "minimum": 1},
}

ERROR_ENVELOPE = {
    "type": "object",
    "required": ["code", "message", "data"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "data": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
    },
}


def _envelope(data_schema: dict[str, Any], code: int = 200, message: str = "success") -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"const": code},
            "message": {"const": message},
            "data": data_schema,
        },
    }


def _key(tp: Any) -> str:
    return repr(tp)  # Page[X] is a new alias object each time it is written


def _response_schema(schema_of: dict[str, Any], response: Any) -> dict[str, Any]:
    return {"type": "object"} if response is None else dict(schema_of[_key(response)])


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the null option (a query has no null, only absence)."""
    options = [o for o in prop.get("anyOf", ()) if o != {"type": "null"}]
    return options[0] if len(options) == 1 else prop


def _bounded(schema: Any, components: dict[str, Any], seen: set[str]) -> Any:
    """State the bound every integer input obeys (shared.validation.INT_MAX) where none is stated.

    Walks ``schema`` in place, into the components it refers to; returns it.
    """
    if isinstance(schema, list):
        for item in schema:
            _bounded(item, components, seen)
    elif isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF.format(name="")):
            name = ref.rpartition("/")[2]
            if name not in seen:
                seen.add(name)
                _bounded(components[name], components, seen)
        kind = schema.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            schema.setdefault("minimum", -INT_MAX)
            schema.setdefault("maximum", INT_MAX)
        for value in schema.values():
            if isinstance(value, dict | list):
                _bounded(value, components, seen)
    return schema


def _schemas(endpoints: list[Endpoint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each read or answered type's schema (keyed by ``_key``) and the shared components."""
    # Every type any endpoint reads or answers, in one pass: shared structs become one component.
    types: list[Any] = []
    for ep in endpoints:
        types.extend(t for t in (ep.query, ep.body, ep.response, ep.accepted, ep.websocket) if t is not None)
    schemas, components = msgspec.json.schema_components(types, schema_hook=schema_hook, ref_template=REF)
    schema_of = dict(zip(map(_key, types), schemas, strict=True))
    components["ErrorEnvelope"] = ERROR_ENVELOPE
    return schema_of, components


def _path_parameters(ep: Endpoint) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": INT_MAX},
        }
        for name in ep.path_params
    ]


def _query_parameters(query_schema: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    required = set(query_schema.get("required", []))
    for name, prop in query_schema.get("properties", {}).items():
        schema = _not_null(prop)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in schema.items() if k not in ("description", "default")},
        }
        if "description" in schema:
            param["description"] = schema["description"]
        if prop.get("default") is not None:
            param["schema"]["default"] = prop["default"]
        params.append(param)
    return params


def _request_body(
    ep: Endpoint, schema_of: dict[str, Any], components: dict[str, Any], seen: set[str]
) -> dict[str, Any] | None:
    if ep.body is not None:
        return {
            "required": True,
            "content": {"application/json": {"schema": _bounded(schema_of[_key(ep.body)], components, seen)}},
        }
    if ep.raw_body_schema is not None:
        return _bounded(copy.deepcopy(ep.raw_body_schema), components, seen)
    return None


def _error_statuses(ep: Endpoint) -> list[int]:
    statuses = set(ep.errors) | {400}
    if ep.body is not None:
        statuses.add(413)  # routing.JSON_BODY_MAX
    if ep.role is not None:
        statuses |= {401, 403}
    return sorted(statuses)


def _responses(ep: Endpoint, schema_of: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Success",
            "content": {"application/json": {"schema": _envelope(_response_schema(schema_of, ep.response))}},
        }
    }
    if ep.raw_responses is not None:
        responses = copy.deepcopy(ep.raw_responses)
    if ep.websocket is not None:
        # OpenAPI has no words for a WebSocket: the upgrade, and the schema of each message
        responses = {
            "101": {
                "description": "Switching Protocols: a WebSocket, one JSON message of this schema a frame",
                "content": {"application/json": {"schema": dict(schema_of[_key(ep.websocket)])}},
            }
        }
    if ep.accepted is not None:
        responses["202"] = {
            "description": "Accepted: it goes on in the background (the data says how far it is)",
            "content": {
                "application/json": {"schema": _envelope(dict(schema_of[_key(ep.accepted)]), 202, "accepted")}
            },
        }
    for status in _error_statuses(ep):
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorEnvelope")}}},
        }
        if status in (429, 503):
            responses[str(status)]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
    return responses


def _operation(
    ep: Endpoint, schema_of: dict[str, Any], components: dict[str, Any], seen: set[str]
) -> dict[str, Any]:
    """The OpenAPI operation object of one endpoint."""
    op: dict[str, Any] = {
        "operationId": ep.handler.__name__,
        "summary": ep.summary,
        "tags": [ep.tag],
    }
    if ep.description and ep.description != ep.summary:
        op["description"] = ep.description
    params = _path_parameters(ep)
    if ep.query is not None:
        params.extend(_query_parameters(_bounded(components[ep.query.__name__], components, seen)))
    headers = [{"name": name, "in": "header", **copy.deepcopy(spec)} for name, spec in ep.headers.items()]
    params.extend(_bounded(headers, components, seen))
    if params:
        op["parameters"] = params
    body = _request_body(ep, schema_of, components, seen)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = _responses(ep, schema_of)
    if ep.role is None:
        op["security"] = []
    return op


def build(endpoints: list[Endpoint]) -> dict[str, Any]:
    schema_of, components = _schemas(endpoints)
    seen: set[str] = set()  # components whose integers are bounded already
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op = _operation(ep, schema_of, components, seen)
        paths.setdefault(API_PREFIX + ep.path, {})[ep.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pvesphere-templates coordinator API",
            "version": VERSION,
            "description": "Upload a disk image once; get a verified PVE template on every node.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def add_route(app: web.Application, endpoints: list[Endpoint]) -> None:
    """``GET /api/v1/openapi.json``: the document of these endpoints, built once; a viewer
    token reads it, as every /api/v1 route needs a token (contract section 1)."""
    document = build(endpoints)

    async def openapi_json(request: web.Request) -> web.Response:
        await authenticate(request, "viewer")
        return web.json_response(document)

    app.router.add_get(API_PREFIX + "/openapi.json", openapi_json)
