"""The OpenAPI 3.1 document of /api/v1, built from the declared endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from coordinator.api.routing import API_PREFIX, Endpoint
from shared.version import VERSION

REF = "#/components/schemas/{model}"

_STATUS_TEXT = {
    400: "Bad input (the message names it)",
    401: "Missing or unknown token",
    403: "Token lacks the role",
    404: "Not found",
    409: "State conflict",
    413: "Too large",
    415: "Unsupported file format",
    422: "Image rejected by validation",
    429: "Rate limited",
    502: "Proxmox VE did not answer as expected",
    503: "No live agent for the needed node",
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


def _envelope(data_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"const": 200},
            "message": {"const": "success"},
            "data": data_schema,
        },
    }


def build(endpoints: list[Endpoint]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = []
    for ep in endpoints:
        for model in (ep.query, ep.body):
            if model is not None:
                models.append((model, "validation"))
        if isinstance(ep.response, type) and issubclass(ep.response, BaseModel):
            models.append((ep.response, "serialization"))
    refs, top = models_json_schema(models, ref_template=REF)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    components["ErrorEnvelope"] = ERROR_ENVELOPE

    def schema_of(model: Any, mode: str) -> dict[str, Any]:
        if model is None:
            return {"type": "object"}
        key = (model, mode)
        if key in refs:
            return refs[key]  # type: ignore[index]
        return TypeAdapter(model).json_schema(ref_template=REF, mode="serialization")

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "tags": [ep.tag],
        }
        if ep.description and ep.description != ep.summary:
            op["description"] = ep.description
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
            for name in ep.path_params
        ]
        if ep.query is not None:
            query_schema = ep.query.model_json_schema(ref_template=REF)
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": {k: v for k, v in prop.items() if k != "description"},
                }
                if "description" in prop:
                    param["description"] = prop["description"]
                params.append(param)
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of(ep.body, "validation")}},
            }
        elif ep.raw_body_schema is not None:
            op["requestBody"] = ep.raw_body_schema
        responses: dict[str, Any] = {
            "200": {
                "description": "Success",
                "content": {
                    "application/json": {"schema": _envelope(schema_of(ep.response, "serialization"))}
                },
            }
        }
        statuses = set(ep.errors) | {400}
        if ep.role is not None:
            statuses |= {401, 403}
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorEnvelope")}}},
            }
        op["responses"] = responses
        if ep.role is None:
            op["security"] = []
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
