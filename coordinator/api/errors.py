"""The error envelope: ``{"code": <http status>, "message": <for humans>, "data": {"error": <slug>}}``."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from coordinator.api.timefmt import json_default
from coordinator.errors import (
    Conflict,
    CoordinatorError,
    Forbidden,
    Invalid,
    NotFound,
    Refusal,
    Unauthorized,
    Unavailable,
)
from coordinator.errors import not_found as domain_not_found
from shared.error_slugs import ErrorSlug
from shared.errors import ServiceError

# The HTTP status of each kind of refusal the domain code raises: the one place they are mapped.
HTTP_STATUS: dict[type[Refusal], int] = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}


class ApiError(CoordinatorError, ServiceError):
    """Raised by the API layer in a request; rendered as the error envelope with this status
    (the coordinator's base, and the one error that crosses HTTP)."""

    def __init__(
        self,
        status: int,
        error: ErrorSlug,
        message: str,
        extra: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, error, message)
        self.extra = extra or {}
        # Seconds after which asking again may succeed (the Retry-After header); see app.py.
        self.retry_after = retry_after


def from_refusal(refusal: Refusal) -> ApiError:
    """A domain refusal as the API answers it (HTTP_STATUS)."""
    status = next(code for kind, code in HTTP_STATUS.items() if isinstance(refusal, kind))
    return ApiError(status, refusal.error, refusal.message, refusal.extra)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def bad_request(message: str, error: ErrorSlug = ErrorSlug.INVALID_REQUEST) -> ApiError:
    return ApiError(400, error, message)


def not_found(error: ErrorSlug, ident: object) -> ApiError:
    """404 ``error`` (``<kind>_not_found``), saying "<kind> <ident> not found"."""
    return from_refusal(domain_not_found(error, ident))


def conflict(message: str, error: ErrorSlug) -> ApiError:
    return ApiError(409, error, message)


def error_response(
    status: int,
    error: ErrorSlug,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    data: dict[str, Any] = {"error": error, **(extra or {})}
    return web.json_response(
        {"code": status, "message": message, "data": data}, status=status, headers=headers
    )


def success(data: Any) -> web.Response:
    return web.json_response({"code": 200, "message": "success", "data": data}, dumps=_dumps)


def accepted(data: Any) -> web.Response:
    """202: the request is taken and finishes in the background; ``data`` says how far it is."""
    return web.json_response({"code": 202, "message": "accepted", "data": data}, status=202, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default)
